// jamba-demo: the J1 hybrid (16 layers, 1:8 attention:Mamba, MoE every other layer) with seeded
// random weights. Prefills 512 tokens, generates 128, and prints the schedule, the speeds and the
// memory a sequence's state needs at 4k, 32k and 256k tokens next to an all-attention stack.
//   jamba-demo [THREADS]
#include <hystack/hystack.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
    using namespace hystack;
    const std::size_t threads = argc > 1 ? std::size_t(std::atoi(argv[1])) : std::max(1u, std::thread::hardware_concurrency());

    // J1: vocab 256, d_model 1024, 16 layers, attention at 4 and 12, MoE (8 experts, top-2) at odd layers.
    const ModelConfig cfg = presets::j1();

    ThreadPool pool(threads);
    auto t0 = std::chrono::steady_clock::now();
    BasicCausalLM<HybridStack<std::ratio<1, 8>>> lm(cfg);
    randomize_params(lm.params(), 42, pool);
    lm.on_weights_loaded();
    const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::printf("hystack jamba-demo: J1 with seeded random weights (%zu threads)\n", threads);
    std::printf("schedule: %s\n", lm.schedule().describe().c_str());
    std::printf("parameters: %.1f M (%.2f GB f32), built in %.1f s; one decode step reads %.2f GB of weights\n",
                double(lm.num_params()) / 1e6, double(lm.num_params()) * 4 / 1e9, build_s,
                double(lm.weight_bytes_per_token()) / 1e9);
    std::size_t weight_bytes = 0;
    for (const auto& p : lm.params()) weight_bytes += param_bytes(p);
    std::printf("weights: %s matrices (norms, biases, conv, A_log, D, router f32), %s in all\n",
                to_string(cfg.stack.weights), MemoryReport::human(weight_bytes).c_str());

    std::vector<token_id> prompt(512);
    for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = token_id("hybrid attention/SSM stacks "[i % 28]);
    auto st = lm.make_state(512 + 128 + 1);
    GenerateOptions opt;
    opt.max_new_tokens = 129;  // 128 decode steps after the prefill
    opt.sampling = {0.8f, 40, 0.95f, 7};
    GenerateStats stats;
    std::size_t shown = 0;
    std::printf("generating: ");
    lm.generate(prompt, st, opt, [&](token_id t) {
        if (shown++ < 48) std::printf("%02x", unsigned(t));
    }, pool, &stats);
    std::printf("...\n");
    std::printf("prefill: %zu tokens in %.3f s = %.1f tokens/s (target >= %s tokens/s on %zu thread%s)\n",
                stats.prompt_tokens, stats.prefill_seconds, stats.prefill_tokens_per_second(),
                threads == 1 ? "100" : "190", threads, threads == 1 ? "" : "s");
    const double gbs = double(lm.weight_bytes_per_token()) * stats.decode_tokens_per_second() / 1e9;
    std::printf("decode:  %zu tokens in %.3f s = %.1f tokens/s (%.1f GB/s of weights streamed)\n", stats.decode_steps,
                stats.decode_seconds, stats.decode_tokens_per_second(), gbs);
    std::printf("state after %zu tokens: %s\n", st.length(), MemoryReport::human(st.bytes()).c_str());
    for (std::size_t ctx : {std::size_t(4096), std::size_t(32768), std::size_t(262144)})
        std::printf("memory %s\n", lm.memory_report(ctx).to_string().c_str());
    return 0;
}
