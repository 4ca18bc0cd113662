// Core demo: SIMD exp vs std::exp, and the thread pool, on this machine.
#include <hystack/hystack.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <vector>

int main() {
    using clock = std::chrono::steady_clock;
    const std::size_t n = 1 << 22;
    std::vector<float> x(n), y(n);
    for (std::size_t i = 0; i < n; ++i) x[i] = -80.0f + 160.0f * float(i) / float(n);
    auto t0 = clock::now();
    hystack::math::exp(std::span<const float>(x), std::span<float>(y));
    auto t1 = clock::now();
    double worst = 0;
    for (std::size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(y[i] / std::exp(double(x[i])) - 1.0));
    auto t2 = clock::now();
    for (std::size_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
    auto t3 = clock::now();
    const double simd_ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / double(n);
    const double std_ns = std::chrono::duration<double, std::nano>(t3 - t2).count() / double(n);
    std::printf("hystack exp: %.3f ns/elem, std::exp: %.3f ns/elem (%.1fx), max rel err %.2e\n", simd_ns, std_ns,
                std_ns / simd_ns, worst);
    hystack::ThreadPool pool;
    std::printf("thread pool: %zu threads\n", pool.num_threads());
    return 0;
}
