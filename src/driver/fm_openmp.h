/* OpenMP when the build has it, a one-thread stand-in when it does not, so the kernels
   compile either way (setup.py probes the compiler). */
#ifndef FM_OPENMP_H
#define FM_OPENMP_H
#ifdef _OPENMP
#include <omp.h>
#define FM_HAVE_OPENMP 1
#else
#define FM_HAVE_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline void omp_set_num_threads(int n) { (void)n; }
#endif
#endif
