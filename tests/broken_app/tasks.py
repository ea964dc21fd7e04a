"""A tasks module whose import fails: autodiscovery must not swallow this."""

import a_module_that_does_not_exist  # noqa: F401
