/* What the CPU running us can do, and what this build was compiled for. */
#ifndef FM_CPU_H
#define FM_CPU_H
#if defined(__AVX2__) && defined(__FMA__)
#define FM_BUILD_TARGET "avx2"
#else
#define FM_BUILD_TARGET "portable"
#endif

static inline int fm_cpu_has_avx2_fma(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    /* libgcc also checks that the OS saves the AVX registers (XGETBV). */
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}
#endif
