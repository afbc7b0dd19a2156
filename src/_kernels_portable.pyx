# Kernels built for the compiler's default target: runs on any CPU of the architecture.
include "_kernels.pxi"
