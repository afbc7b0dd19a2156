# Private: the compiled-once modules' API in one namespace. Its functions are typed where they
# are re-exported (fastmomentum/__init__.pyi); the modules themselves are internal.
from typing import Any

kernels: Any
