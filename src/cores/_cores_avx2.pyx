# The numeric cores built with -mavx2 -mfma (setup.py); loaded only on CPUs that have
# both (fastmomentum._target checks first). See fm_core_table.pxd.
from fm_make_table cimport CoreTable, core_table_capsule

cdef CoreTable _table
#: this target's CoreTable, for fastmomentum._target
CORE_TABLE = core_table_capsule(&_table)
