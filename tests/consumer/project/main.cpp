// A user's program: include the umbrella header, run a kernel, report an error the library throws.
#include <hystack/hystack.hpp>
#if defined(CONSUMER_HAS_IO)
#include <hystack/io.hpp>
#endif

#include <cmath>
#include <cstdio>

int main() {
    float in[5] = {-1.0f, 0.0f, 0.5f, 1.0f, 2.0f}, out[5];
    hystack::math::exp(std::span<const float>(in), std::span<float>(out));
    for (int i = 0; i < 5; ++i)
        if (std::fabs(out[i] - std::exp(in[i])) > 1e-6f * std::exp(in[i])) return 1;
    hystack::ThreadPool pool(2);
    hystack::Matrix<float> x(3, 4), w(5, 4), y(3, 5);
    for (std::size_t i = 0; i < x.size(); ++i) x.data()[i] = float(i % 7) - 3.0f;
    for (std::size_t i = 0; i < w.size(); ++i) w.data()[i] = float(i % 5) * 0.25f;
    hystack::kernels::linear(x.view(), w.view(), {}, y.view(), pool);
    try {
        hystack::Matrix<float> bad(3, 6);
        hystack::kernels::linear(x.view(), w.view(), {}, bad.view(), pool);
        return 2;
    } catch (const hystack::error& e) {
        std::printf("consumer ok: %s\n", e.what());
    }
    return 0;
}
