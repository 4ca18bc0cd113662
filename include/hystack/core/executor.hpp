#pragma once
#include "module.hpp"

#include <algorithm>
#include <atomic>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "error.hpp"

#if defined(HYSTACK_WITH_OPENMP)
#include <omp.h>
#endif

namespace hystack {

// Kernels take an executor and call parallel_for(n, grain, fn) with fn(begin, end) or
// fn(begin, end, chunk). The range [0, n) is split statically into at most num_threads() chunks of
// at least `grain` items (like ggml's ith/nth), chunk c < num_threads() being [c*n/k, (c+1)*n/k).
// Kernels split only independent outputs, so results are bit-identical for any thread count.
// A dispatch costs microseconds (see BM_pool_overhead): parallelise per layer-sized piece of work,
// never per tiny primitive.

namespace detail {
/// Number of chunks for n items on `threads` threads, each chunk at least `grain` items (or one chunk).
inline std::size_t chunk_count(std::size_t n, std::size_t grain, std::size_t threads) {
    if (n == 0) return 0;
    grain = std::max<std::size_t>(grain, 1);
    return std::max<std::size_t>(1, std::min(threads, n / grain));
}
inline std::size_t chunk_begin(std::size_t n, std::size_t k, std::size_t c) { return c * n / k; }

template <class F>
void call_chunk(F& fn, std::size_t b, std::size_t e, std::size_t c) {
    if constexpr (std::is_invocable_v<F&, std::size_t, std::size_t, std::size_t>)
        fn(b, e, c);
    else
        fn(b, e);
}
}  // namespace detail

/// An executor runs fn over a split of [0, n). See the note above for the contract.
template <class E>
concept Executor = requires(E& e, void (*fn)(std::size_t, std::size_t)) {
    { e.num_threads() } -> std::convertible_to<std::size_t>;
    e.parallel_for(std::size_t{}, std::size_t{}, fn);
};

/// Runs everything on the calling thread. The default executor.
struct SerialExecutor {
    static constexpr std::size_t num_threads() { return 1; }
    template <class F>
    void parallel_for(std::size_t n, std::size_t /*grain*/, F&& fn) const {
        if (n) detail::call_chunk(fn, 0, n, 0);
    }
};

/// A small persistent pool: worker threads live across calls; the calling thread runs chunk 0.
/// Workers spin briefly on a generation counter, then block, so back-to-back calls (a model
/// step) pay no wake-up while an idle pool burns no CPU. One caller at a time; a parallel_for
/// issued from inside a task runs serially.
class ThreadPool {
public:
    /// threads = 0 means std::thread::hardware_concurrency().
    explicit ThreadPool(std::size_t threads = 0) { set_num_threads(threads); }
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;
    ~ThreadPool() { stop_workers(); }

    std::size_t num_threads() const { return workers_.size() + 1; }

    /// Changes the thread count (joins and restarts the workers). Not callable from a task.
    void set_num_threads(std::size_t threads) {
        if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
        check(threads <= 1024, "ThreadPool: expected at most 1024 threads, got ", threads);
        stop_workers();
        stop_ = false;
        // New workers start at the current generation: starting from 0 made a worker created by a
        // resize re-run the previous (finished, dangling) job.
        const std::size_t gen = generation_.load(std::memory_order_acquire);
        for (std::size_t i = 1; i < threads; ++i) workers_.emplace_back([this, i, gen] { worker_loop(i, gen); });
    }

    template <class F>
    void parallel_for(std::size_t n, std::size_t grain, F&& fn) {
        const std::size_t k = detail::chunk_count(n, grain, num_threads());
        if (k == 0) return;
        if (k == 1 || in_task()) {
            // Nested or tiny: run inline, chunk by chunk, so the split (and results) stay the same.
            for (std::size_t c = 0; c < k; ++c)
                detail::call_chunk(fn, detail::chunk_begin(n, k, c), detail::chunk_begin(n, k, c + 1), c);
            return;
        }
        using Fn = std::remove_reference_t<F>;
        job_.ctx = static_cast<void*>(std::addressof(fn));
        job_.run = [](void* ctx, std::size_t b, std::size_t e, std::size_t c) {
            detail::call_chunk(*static_cast<Fn*>(ctx), b, e, c);
        };
        job_.n = n;
        job_.chunks = k;
        error_ = nullptr;
        // Every worker acknowledges every generation, so none still reads job_ when the next one is set.
        pending_.store(workers_.size(), std::memory_order_relaxed);
        {
            std::lock_guard lock(mutex_);
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        run_chunk(0);
        // Wait for the workers: spin first (they finish within microseconds of us), then block.
        for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
            if (spin > spin_limit) {
                std::unique_lock lock(mutex_);
                done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
                break;
            }
            pause();
        }
        if (error_) std::rethrow_exception(error_);
    }

private:
    static constexpr int spin_limit = 1 << 14;

    struct Job {
        void* ctx = nullptr;
        void (*run)(void*, std::size_t, std::size_t, std::size_t) = nullptr;
        std::size_t n = 0, chunks = 0;
    };

    static bool& in_task() {
        static thread_local bool flag = false;
        return flag;
    }
    static void pause() {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#else
        std::this_thread::yield();
#endif
    }

    void run_chunk(std::size_t c) {
        if (c >= job_.chunks) return;
        in_task() = true;
        try {
            job_.run(job_.ctx, detail::chunk_begin(job_.n, job_.chunks, c), detail::chunk_begin(job_.n, job_.chunks, c + 1), c);
        } catch (...) {
            std::lock_guard lock(mutex_);
            if (!error_) error_ = std::current_exception();
        }
        in_task() = false;
    }

    void worker_loop(std::size_t index, std::size_t seen) {
        for (;;) {
            std::size_t gen;
            int spin = 0;
            while ((gen = generation_.load(std::memory_order_acquire)) == seen && !stop_.load(std::memory_order_acquire)) {
                if (++spin > spin_limit) {
                    std::unique_lock lock(mutex_);
                    wake_.wait(lock, [&] {
                        return generation_.load(std::memory_order_acquire) != seen || stop_.load(std::memory_order_acquire);
                    });
                    spin = 0;
                } else {
                    pause();
                }
            }
            if (stop_.load(std::memory_order_acquire)) return;
            seen = gen;
            run_chunk(index);
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard lock(mutex_);
                done_.notify_one();
            }
        }
    }

    void stop_workers() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
        workers_.clear();
    }

    std::vector<std::thread> workers_;
    Job job_;
    std::atomic<std::size_t> generation_{0};
    std::atomic<std::size_t> pending_{0};
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::condition_variable wake_, done_;
    std::exception_ptr error_;
};

#if defined(HYSTACK_WITH_OPENMP)
/// OpenMP executor (opt-in: configure with -DHYSTACK_WITH_OPENMP=ON). Same static split as ThreadPool.
class OpenMPExecutor {
public:
    explicit OpenMPExecutor(std::size_t threads = 0) : threads_(threads ? threads : std::size_t(omp_get_max_threads())) {}
    std::size_t num_threads() const { return threads_; }
    void set_num_threads(std::size_t t) { threads_ = t ? t : std::size_t(omp_get_max_threads()); }
    template <class F>
    void parallel_for(std::size_t n, std::size_t grain, F&& fn) const {
        const std::size_t k = detail::chunk_count(n, grain, threads_);
        if (k <= 1) {
            if (k) detail::call_chunk(fn, 0, n, 0);
            return;
        }
        std::exception_ptr err;
#pragma omp parallel for num_threads(int(k)) schedule(static, 1)
        for (long c = 0; c < long(k); ++c) {
            try {
                detail::call_chunk(fn, detail::chunk_begin(n, k, std::size_t(c)), detail::chunk_begin(n, k, std::size_t(c) + 1),
                                   std::size_t(c));
            } catch (...) {
#pragma omp critical
                if (!err) err = std::current_exception();
            }
        }
        if (err) std::rethrow_exception(err);
    }

private:
    std::size_t threads_;
};
#endif

/// A non-owning, type-erased reference to any executor, for code behind a run-time interface (the
/// stack's layer kinds are virtual, so they cannot take a template executor). It forwards every
/// parallel_for with the same (n, grain) to the referenced executor, so the split, and the results,
/// are those of the executor itself. The referenced executor must outlive the reference.
class ExecutorRef {
public:
    template <Executor E>
        requires(!std::is_same_v<std::remove_cvref_t<E>, ExecutorRef>)
    ExecutorRef(E& e)  // NOLINT: converts implicitly, like a reference
        : ctx_(static_cast<void*>(std::addressof(e))),
          threads_([](void* c) { return std::size_t(static_cast<E*>(c)->num_threads()); }),
          run_([](void* c, std::size_t n, std::size_t grain, void* fn, Chunk chunk) {
              static_cast<E*>(c)->parallel_for(n, grain, [fn, chunk](std::size_t b, std::size_t e, std::size_t k) {
                  chunk(fn, b, e, k);
              });
          }) {}

    std::size_t num_threads() const { return threads_(ctx_); }
    template <class F>
    void parallel_for(std::size_t n, std::size_t grain, F&& fn) const {
        using Fn = std::remove_reference_t<F>;
        run_(ctx_, n, grain, const_cast<void*>(static_cast<const void*>(std::addressof(fn))),
             [](void* f, std::size_t b, std::size_t e, std::size_t c) { detail::call_chunk(*static_cast<Fn*>(f), b, e, c); });
    }

private:
    using Chunk = void (*)(void*, std::size_t, std::size_t, std::size_t);
    void* ctx_;
    std::size_t (*threads_)(void*);
    void (*run_)(void*, std::size_t, std::size_t, void*, Chunk);
};

}  // namespace hystack
