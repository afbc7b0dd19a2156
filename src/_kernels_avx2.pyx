# The same kernels built with -mavx2 -mfma (see setup.py); loaded only on CPUs that have both.
include "_kernels.pxi"
