/* A small thread pool for the kernels' parallel loops (fm_pool.c, compiled into
   fastmomentum._threads only; everything else runs loops through its run_chunks).

   fm_parallel_for(task, ctx, nchunks, max_workers) runs task(ctx, chunk, worker) once for
   every chunk in [0, nchunks) and returns when all have run. Chunks are claimed one at a
   time through an atomic counter by the calling thread (worker 0) and by pool threads
   that are awake (workers 1 .. max_workers - 1, each index used by one thread at a time:
   it may index per-thread scratch). The caller never waits for a thread that has not
   started: when no chunk is left to claim it waits only for chunks that running threads
   have claimed. Which thread runs a chunk must not matter to the task (fixed chunk
   boundaries give the same bits for any thread count and any schedule).

   Fork-safe: a fork child starts with an empty pool and creates its threads on first use.
   Not reentrant: a task must not call fm_parallel_for (a nested or concurrent call from
   another thread runs its chunks on its own thread, in order). */
#ifndef FM_POOL_H
#define FM_POOL_H
#include <stddef.h>

typedef void (*fm_task_fn)(void* ctx, ptrdiff_t chunk, int worker);

void fm_parallel_for(fm_task_fn task, void* ctx, ptrdiff_t nchunks, int max_workers);

/* The most threads a loop can use here: the CPUs this process may run on (at the pool's
   first use; again in a fork child). */
int fm_pool_cpus(void);

/* What a parallel loop costs its caller beyond its share of the chunks, in ns: waking the
   pool threads and waiting for chunks they claimed. A running estimate, measured on every
   loop the pool runs (it grows when the machine is loaded and wake-ups are slow). */
double fm_pool_overhead_ns(void);

/* Tests only: 0 normal; 1 the caller runs every chunk (as when no thread wakes in time);
   2 the caller runs none (pool threads run them all, in whatever order they wake). */
void fm_pool_set_schedule(int schedule);

/* Tests and benchmarks: set the overhead estimate (it goes on adapting from there). */
void fm_pool_set_overhead_ns(double ns);

/* Pool threads created so far (tests: a thread count is capped at what the work uses). */
int fm_pool_threads(void);

/* Counts since the process started: parallel loops run on the pool, chunks run by pool
   threads, and times a caller slept waiting for a pool thread's chunk (benchmarks). */
void fm_pool_stats(unsigned long long out[3]);
#endif
