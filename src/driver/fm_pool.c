/* The kernels' thread pool: see fm_pool.h for the contract.

   Why not OpenMP: an OpenMP parallel region ends with a barrier, so the caller waits for
   every thread of the team, also one whose core runs another process: on this 2-core
   machine with one core busy a 256k-element momentum_step took 25 ms (a time slice of the
   other process) instead of 0.15 ms, and libgomp's team does not survive fork (a fork
   child of a parent that used it hangs in its first region). OpenMP offers no region
   whose end waits only for the threads that started. This pool does: work is cut into
   chunks claimed through one atomic word; the caller claims chunks too, so a thread that
   never woke claims nothing and costs the caller nothing but the wake-up call.

   The claim word packs generation (22 bits) | slots taken (10 bits) | next chunk (32
   bits). A thread reads the word, then the job's fields, then claims with a
   compare-and-swap of that word: a job is published by first bumping the generation
   (closing the old job), then writing the fields, then opening it, so a claim made with
   a stale view of the fields always fails. The first claim of a thread in a job also
   takes a worker slot (the caller holds slot 0).

   Threads are created once (lazily, never more than the CPUs or what a job can use),
   wait for work spinning briefly and then sleep on a futex; the caller waits for claimed
   chunks the same way. Linux only (futex); elsewhere every loop runs on the caller. */
#define _GNU_SOURCE
#include "fm_pool.h"

#include <stdint.h>

#if defined(__linux__) && !defined(__STDC_NO_ATOMICS__)
#include <linux/futex.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FM_HIDDEN __attribute__((visibility("hidden")))

enum { POOL_MAX = 1023 };   /* worker slots: 10 bits of the claim word */
#define NEXT_MASK 0xFFFFFFFFull
#define SLOT_ONE (1ull << 32)
#define SLOT_MASK 0x3FFull
#define GEN_ONE (1ull << 42)
#define CLOSED NEXT_MASK    /* "next chunk" of a job being set up: above any nchunks */

/* Spin budgets before sleeping on a futex. A pool thread that just finished a job keeps
   looking for the next one this long (an optimizer's calls follow each other within a
   few us); the caller looks this long for a claimed chunk to finish. Short on purpose: a
   spinning thread takes a core from whoever else wants it. */
#define IDLE_SPIN_NS 100000
#define WAIT_SPIN_NS 5000
/* No yielding between chunks: a pool thread that gave its CPU away near the end of a loop
   (to dodge a preemption in the middle of the loop's last chunks) cost more than it saved.
   Measured in one process against eb8d50c's OpenMP build (benchmarks/contention.py, medians
   of 21 rounds, 2 runs each): quiet, 4M-element momentum_step 1.27-1.53x slower with the
   yield, 0.92-1.05x without; ema_update 4M 1.25x and 1.05-1.13x; with one core busy,
   without it every kernel from 256k to 16M stayed within 0.98-1.04x of one thread. */
/* The caller's overhead before any loop was measured: a wake-up call (benchmarks/
   wake_cost.c: 4.6-6.6 us on the 2-vCPU VM with its cores idle or one busy, 13-15 us with
   both loaded by other processes). Each loop then updates the estimate (1/16 per loop,
   a sample capped at OVERHEAD_CAP_NS so that one preempted thread does not dominate). */
#define FM_POOL_FIRST_OVERHEAD_NS 5000
#define OVERHEAD_CAP_NS 200000
/* An estimate above the first one relaxes back towards it (halving the excess every
   OVERHEAD_HALF_LIFE_NS without a new sample): a loop that the estimate keeps on one
   thread adds no sample, so two preempted loops (a sample of 200 us adds 12 us) kept
   1M-element momentum_step on one thread for the rest of the process on a quiet machine.
   Relaxed, the estimate lets a loop try the threads again within ~0.1 s; under sustained
   load that costs at most one slow loop per try. */
#define OVERHEAD_HALF_LIFE_NS 20000000.0

/* The words written often each have a cache line of their own (a spinning thread reading
   a line another thread writes would pull it back and forth). */
#define FM_LINE _Alignas(64)
static struct {
    /* claimed per chunk; the job's fields, read with it, beside it */
    FM_LINE _Atomic uint64_t claim;
    _Atomic(fm_task_fn) task;
    _Atomic(void*) ctx;
    _Atomic uint32_t nchunks;
    _Atomic uint32_t slots;       /* worker slots of this job, caller included */
    FM_LINE _Atomic uint32_t done;     /* futex: chunks finished */
    _Atomic int caller_sleeps;
    FM_LINE _Atomic uint32_t epoch;    /* futex: bumped for every job */
    _Atomic int sleepers;         /* pool threads asleep on epoch */
    _Atomic int caller_cpu;       /* where the last caller ran */
    FM_LINE _Atomic int busy;          /* a caller owns the pool */
    _Atomic uint32_t overhead_ns; /* running estimate: see fm_pool_overhead_ns */
    _Atomic int64_t overhead_at;  /* when it was last set */
    _Atomic uint64_t stats[3];    /* jobs, chunks run by pool threads, caller sleeps */
    int threads;                  /* created (by the owning caller only) */
    int cpus;
    int schedule;
} pool;

static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static long futex(_Atomic uint32_t* word, int op, uint32_t value) {
    return syscall(SYS_futex, (uint32_t*)word, op | FUTEX_PRIVATE_FLAG, value, NULL, NULL, 0);
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Spin until *word != value or budget_ns passed; then the word's value. */
static uint32_t spin_while(_Atomic uint32_t* word, uint32_t value, int64_t budget_ns) {
    uint32_t seen = atomic_load(word);
    if (seen != value || budget_ns <= 0)
        return seen;
    int64_t end = now_ns() + budget_ns;
    for (int i = 1;; i++) {
        for (int k = 0; k < 32; k++) {
            cpu_relax();
            if ((seen = atomic_load_explicit(word, memory_order_acquire)) != value)
                return seen;
        }
        if ((i & 7) == 0 && now_ns() > end)
            return seen;
    }
}

static int count_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        return CPU_COUNT(&set) > 0 ? CPU_COUNT(&set) : 1;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Claim and run chunks of the open job; slot 0 for the caller, -1 for a pool thread (takes
   a free slot with its first claim, or stops when the job has none left). Returns the
   chunks this thread ran. */
static uint32_t run_chunks(int slot) {
    uint32_t ran = 0;
    uint64_t gen = 0;
    for (;;) {
        uint64_t s = atomic_load(&pool.claim);
        if (ran && s / GEN_ONE != gen)   /* a pool thread's job ended under it */
            break;
        fm_task_fn task = atomic_load_explicit(&pool.task, memory_order_relaxed);
        void* ctx = atomic_load_explicit(&pool.ctx, memory_order_relaxed);
        uint32_t nchunks = atomic_load_explicit(&pool.nchunks, memory_order_relaxed);
        uint32_t slots = atomic_load_explicit(&pool.slots, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        uint64_t next = s & NEXT_MASK;
        if (next >= nchunks)
            break;
        uint64_t claimed = s + 1;
        int worker = slot;
        if (worker < 0) {
            worker = (int)((s / SLOT_ONE) & SLOT_MASK);
            if ((uint32_t)worker >= slots)
                break;
            claimed += SLOT_ONE;
        }
        if (!atomic_compare_exchange_weak(&pool.claim, &s, claimed))
            continue;
        slot = worker;
        gen = s / GEN_ONE;
        task(ctx, (ptrdiff_t)next, worker);
        ran++;
        if (worker != 0 && atomic_fetch_add(&pool.done, 1) + 1 == nchunks
                && atomic_load(&pool.caller_sleeps))
            futex(&pool.done, FUTEX_WAKE, 1);
    }
    if (slot > 0 && ran)
        atomic_fetch_add_explicit(&pool.stats[1], ran, memory_order_relaxed);
    return ran;
}

static void* pool_thread(void* arg) {
    (void)arg;
    uint32_t epoch = atomic_load(&pool.epoch);
    for (;;) {
        /* no spinning on the caller's CPU: it would hold off the caller itself */
        uint32_t seen = spin_while(&pool.epoch, epoch,
                                   sched_getcpu() == atomic_load(&pool.caller_cpu)
                                   ? 0 : IDLE_SPIN_NS);
        if (seen == epoch) {
            atomic_fetch_add(&pool.sleepers, 1);
            futex(&pool.epoch, FUTEX_WAIT, epoch);
            atomic_fetch_sub(&pool.sleepers, 1);
            seen = atomic_load(&pool.epoch);
        }
        epoch = seen;
        run_chunks(-1);
    }
    return NULL;
}

static void set_overhead_ns(uint32_t ns) {
    atomic_store_explicit(&pool.overhead_ns, ns, memory_order_relaxed);
    atomic_store_explicit(&pool.overhead_at, now_ns(), memory_order_relaxed);
}

/* The estimate at time `now` (see OVERHEAD_HALF_LIFE_NS). */
static double relaxed_overhead_ns(int64_t now) {
    double estimate = atomic_load_explicit(&pool.overhead_ns, memory_order_relaxed);
    if (estimate <= FM_POOL_FIRST_OVERHEAD_NS)
        return estimate;
    double age = (double)(now - atomic_load_explicit(&pool.overhead_at, memory_order_relaxed));
    return FM_POOL_FIRST_OVERHEAD_NS + (estimate - FM_POOL_FIRST_OVERHEAD_NS)
                                       * exp2(-age / OVERHEAD_HALF_LIFE_NS);
}

static void reset_pool(void) {
    /* a fork child: the parent's threads (and a job in flight) are not here */
    atomic_store(&pool.claim, 0);
    atomic_store(&pool.nchunks, 0);
    atomic_store(&pool.epoch, 0);
    atomic_store(&pool.done, 0);
    atomic_store(&pool.caller_sleeps, 0);
    atomic_store(&pool.sleepers, 0);
    atomic_store(&pool.busy, 0);
    atomic_store(&pool.overhead_ns, FM_POOL_FIRST_OVERHEAD_NS);
    atomic_store(&pool.overhead_at, 0);
    pool.threads = 0;
    pool.cpus = count_cpus();
}

static void init_pool(void) {
    reset_pool();
    pthread_atfork(NULL, NULL, reset_pool);
}

/* Start pool threads until there are `want` (fewer if the system refuses). */
static void start_threads(int want) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);   /* signals stay with the caller's threads */
    while (pool.threads < want) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 1 << 18);
        int failed = pthread_create(&t, &attr, pool_thread, NULL);
        pthread_attr_destroy(&attr);
        if (failed)
            break;
        pool.threads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void run_serially(fm_task_fn task, void* ctx, ptrdiff_t nchunks) {
    for (ptrdiff_t c = 0; c < nchunks; c++)
        task(ctx, c, 0);
}

FM_HIDDEN void fm_parallel_for(fm_task_fn task, void* ctx, ptrdiff_t nchunks, int max_workers) {
    pthread_once(&pool_once, init_pool);
    ptrdiff_t workers = max_workers;
    if (workers > nchunks)
        workers = nchunks;
    if (workers > pool.cpus)
        workers = pool.cpus;
    if (workers > POOL_MAX)
        workers = POOL_MAX;
    if (workers < 2 || nchunks >= (ptrdiff_t)CLOSED || pool.schedule == 1
            || atomic_exchange(&pool.busy, 1)) {
        run_serially(task, ctx, nchunks);
        return;
    }
    if (pool.threads < workers - 1)
        start_threads((int)workers - 1);
    int64_t t_start = now_ns();
    if (pool.threads == 0) {
        atomic_store(&pool.busy, 0);
        run_serially(task, ctx, nchunks);
        return;
    }
    atomic_store_explicit(&pool.caller_cpu, sched_getcpu(), memory_order_relaxed);
    /* publish: close the old job, set the fields, open with slot 0 taken, wake */
    uint64_t gen = atomic_load(&pool.claim) / GEN_ONE + 1;
    atomic_store(&pool.claim, (gen % (1ull << 22)) * GEN_ONE | CLOSED);
    atomic_store_explicit(&pool.task, task, memory_order_relaxed);
    atomic_store_explicit(&pool.ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&pool.nchunks, (uint32_t)nchunks, memory_order_relaxed);
    atomic_store_explicit(&pool.slots, (uint32_t)workers, memory_order_relaxed);
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    atomic_store(&pool.claim, (gen % (1ull << 22)) * GEN_ONE | SLOT_ONE);
    atomic_fetch_add(&pool.epoch, 1);
    atomic_fetch_add_explicit(&pool.stats[0], 1, memory_order_relaxed);
    if (atomic_load(&pool.sleepers) > 0)
        futex(&pool.epoch, FUTEX_WAKE, (uint32_t)workers - 1);

    int64_t t_run = now_ns(), overhead = t_run - t_start;
    uint32_t ran = pool.schedule == 2 ? 0 : run_chunks(0);
    uint32_t done = atomic_fetch_add(&pool.done, ran) + ran;
    int64_t t_wait = now_ns();
    /* the last chunk a running thread claimed may have started just before the caller
       ran out: waiting up to one chunk's time is the split's granularity, not overhead.
       Counting it made ewm_mean's 2 MB superblocks (~0.5 ms each) raise the estimate to
       ~94 us on a quiet machine, and momentum_step and ema_update from 256k to 4M then
       ran on one thread (1.1-1.8x slower than eb8d50c's OpenMP build). */
    int64_t chunk_ns = ran ? (t_wait - t_run) / ran : 0;
    /* what is left was claimed by threads that run: wait for them */
    if (done != (uint32_t)nchunks) {
        int64_t end = now_ns() + WAIT_SPIN_NS;
        do
            done = spin_while(&pool.done, done, WAIT_SPIN_NS);
        while (done != (uint32_t)nchunks && now_ns() < end);
    }
    if (done != (uint32_t)nchunks)
        atomic_fetch_add_explicit(&pool.stats[2], 1, memory_order_relaxed);
    while (done != (uint32_t)nchunks) {
        atomic_store(&pool.caller_sleeps, 1);
        done = atomic_load(&pool.done);
        if (done != (uint32_t)nchunks)
            futex(&pool.done, FUTEX_WAIT, done);
        done = atomic_load(&pool.done);
    }
    atomic_store(&pool.caller_sleeps, 0);
    int64_t waited = now_ns() - t_wait - chunk_ns;
    overhead += waited > 0 ? waited : 0;
    int64_t estimate = (int64_t)relaxed_overhead_ns(now_ns());
    estimate += ((overhead < OVERHEAD_CAP_NS ? overhead : OVERHEAD_CAP_NS) - estimate) / 16;
    set_overhead_ns((uint32_t)estimate);
    atomic_store(&pool.busy, 0);
}

FM_HIDDEN double fm_pool_overhead_ns(void) {
    pthread_once(&pool_once, init_pool);
    return relaxed_overhead_ns(now_ns());
}

FM_HIDDEN int fm_pool_cpus(void) {
    pthread_once(&pool_once, init_pool);
    return pool.cpus;
}

FM_HIDDEN void fm_pool_set_schedule(int schedule) { pool.schedule = schedule; }

FM_HIDDEN void fm_pool_set_overhead_ns(double ns) {
    pthread_once(&pool_once, init_pool);
    set_overhead_ns((uint32_t)(ns < 0 ? 0 : ns > 4e9 ? 4e9 : ns));
}

FM_HIDDEN int fm_pool_threads(void) { return pool.threads; }

FM_HIDDEN void fm_pool_stats(unsigned long long out[3]) {
    for (int i = 0; i < 3; i++)
        out[i] = atomic_load_explicit(&pool.stats[i], memory_order_relaxed);
}

#else  /* no futex: every loop runs on the calling thread */

void fm_parallel_for(fm_task_fn task, void* ctx, ptrdiff_t nchunks, int max_workers) {
    (void)max_workers;
    for (ptrdiff_t c = 0; c < nchunks; c++)
        task(ctx, c, 0);
}

int fm_pool_cpus(void) { return 1; }
double fm_pool_overhead_ns(void) { return 1e300; }
void fm_pool_set_schedule(int schedule) { (void)schedule; }
void fm_pool_set_overhead_ns(double ns) { (void)ns; }
int fm_pool_threads(void) { return 0; }
void fm_pool_stats(unsigned long long out[3]) { out[0] = out[1] = out[2] = 0; }
#endif
