# Private: the compiled build picked for this CPU. Its functions are typed where they are
# re-exported (fastmomentum/__init__.pyi); the modules themselves are internal.
from types import ModuleType
from typing import Any

BUILDS: dict[str, ModuleType]
kernels: Any
