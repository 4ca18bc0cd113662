// A user's program built the strictest way a user may build it: -Wall -Wextra -Wpedantic -Werror, at -O0
// and -O2, for AVX-512 (-march=native) and AVX2 (-march=x86-64-v3). It includes the umbrella and io
// headers and runs what instantiates most of hystack (elementwise math, bf16, both stacks, the model,
// safetensors I/O) on the tiny Jamba checkpoint given as argv[1]. Exits non-zero on a wrong result.
#include <hystack/hystack.hpp>
#include <hystack/io.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <vector>

namespace {

int fail(const char* what) {
    std::fprintf(stderr, "consumer strict: %s\n", what);
    return 1;
}

// 37 elements: a SIMD body and a scalar tail on every ISA.
bool elementwise_ok() {
    std::vector<float> x(37), y(37);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = -9.0f + 0.5f * float(i);
    hystack::math::exp(std::span<const float>(x), std::span<float>(y));
    for (std::size_t i = 0; i < x.size(); ++i)
        if (std::fabs(y[i] - std::exp(x[i])) > 1e-6f * std::exp(x[i])) return false;
    hystack::math::softplus(std::span<const float>(x), std::span<float>(y));
    for (std::size_t i = 0; i < x.size(); ++i)
        if (std::fabs(y[i] - std::log1p(std::exp(x[i]))) > 1e-5f * (1.0f + std::fabs(x[i]))) return false;
    hystack::math::silu(std::span<const float>(x), std::span<float>(y));
    hystack::math::sigmoid(std::span<const float>(y), std::span<float>(y));
    std::vector<hystack::bf16> h(x.size());
    hystack::narrow(std::span<const float>(x), std::span<hystack::bf16>(h));
    hystack::widen(std::span<const hystack::bf16>(h), std::span<float>(y));
    return y == x;  // x holds multiples of 0.5 in [-9, 9]: exact in bf16
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: consumer_strict TINY_JAMBA_DIR\n");
        return 2;
    }
    if (!elementwise_ok()) return fail("elementwise math or bf16 gave a wrong value");

    // The same checkpoint in the runtime-scheduled and the compile-time 1:8 stack: greedy decoding must agree.
    const std::vector<hystack::token_id> prompt = {1, 17, 42, 99, 7};
    hystack::GenerateOptions opt;
    opt.max_new_tokens = 6;
    opt.sampling = hystack::SamplingParams::greedy();
    hystack::ThreadPool pool(2);
    auto lm = hystack::io::load_jamba(argv[1]);
    auto st = lm.make_state(32);
    const auto a = lm.generate(prompt, st, opt, [](hystack::token_id) {}, pool);
    auto lm8 = hystack::io::load_jamba<hystack::HybridStack<std::ratio<1, 8>>>(argv[1]);
    auto st8 = lm8.make_state(32);
    const auto b = lm8.generate(prompt, st8, opt, [](hystack::token_id) {}, pool);
    if (a.size() != opt.max_new_tokens || a != b) return fail("the two stacks generated different tokens");

    // Logits through safetensors and back, as F32 (exact) and BF16 (rounded as hystack::bf16 rounds).
    auto st2 = lm.make_state(32);
    auto logits = lm.prefill_all(prompt, st2, pool);
    for (float v : logits.span())
        if (!std::isfinite(v)) return fail("non-finite logit");
    const auto path = (std::filesystem::temp_directory_path() / "hystack_consumer_strict.safetensors").string();
    const std::vector<std::size_t> shape = {logits.rows(), logits.cols()};
    hystack::io::write_safetensors(path, {{"f32", shape, logits.span()}, {"bf16", shape, logits.span(), "BF16"}});
    std::vector<float> f32(logits.size()), bf(logits.size());
    {
        hystack::io::SafetensorsFile file(path);
        file.read_into("f32", f32);
        file.read_into("bf16", bf);
    }
    std::filesystem::remove(path);
    for (std::size_t i = 0; i < f32.size(); ++i)
        if (f32[i] != logits.span()[i] || bf[i] != float(hystack::bf16(logits.span()[i])))
            return fail("logits changed through safetensors");
    std::printf("consumer strict ok: generated %zu tokens, logits [%zu, %zu]\n", a.size(), logits.rows(),
                logits.cols());
    return 0;
}
