# The numeric cores built for the compiler's default target: runs on any CPU of the
# architecture (x86-64: SSE2). See fm_core_table.pxd.
from fm_make_table cimport CoreTable, core_table_capsule

cdef CoreTable _table
#: this target's CoreTable, for fastmomentum._target
CORE_TABLE = core_table_capsule(&_table)
