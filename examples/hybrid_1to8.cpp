// A 1:8 attention:Mamba stack from the header-only blocks, with random weights, run on a batch of
// tokens and then one token at a time.
#include <hystack/hystack.hpp>

#include <cstdio>

int main() {
    using namespace hystack;
    StackConfig cfg;
    cfg.d_model = 256;
    cfg.num_layers = 8;             // one period: Mamba x4, attention (layer 4), Mamba x3
    cfg.num_attention_heads = 8;
    cfg.num_key_value_heads = 2;    // grouped-query attention
    cfg.intermediate_size = 512;
    cfg.num_experts = 4;            // MoE on odd layers, dense SwiGLU on even ones
    cfg.num_experts_per_tok = 2;

    HybridStack<std::ratio<1, 8>> stack(cfg);
    randomize_params(stack.params(), 1);
    stack.on_weights_loaded();
    std::printf("%s\n", stack.schedule().describe().c_str());

    ThreadPool pool(2);
    auto state = stack.make_state(1024);               // KV capacity of the attention layer
    Matrix<float> x(64, cfg.d_model);                  // 64 token embeddings (the residual stream)
    randomize_params({{"x", {64, cfg.d_model}, x.span()}}, 2);
    stack.prefill(x.view(), state, pool);              // prefill: every layer over all 64 tokens

    std::vector<float> t(x.row(63), x.row(63) + cfg.d_model);
    for (int i = 0; i < 4; ++i) stack.step(std::span<float>(t), state, pool);  // decode, one token each
    std::printf("after %zu tokens: output[0..3] = %.4f %.4f %.4f %.4f; state %zu bytes\n", state.length(), t[0], t[1],
                t[2], t[3], state.bytes());
    std::printf("%s\n", stack.memory_report(32768).to_string().c_str());
}
