// Decode allocates nothing once warm: global operator new is counted around warm step and step_batch
// calls of a model with every built-in kind (mamba1, attention, dense, moe), serial and threaded.
#include <hystack/hystack.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <vector>

#include "catch.hpp"

// Under AddressSanitizer the runtime owns operator new / delete (a replacement here would free its
// allocations with free()): the decode still runs there, but nothing is counted.
#if defined(__SANITIZE_ADDRESS__)
#define HYSTACK_COUNT_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HYSTACK_COUNT_ALLOCATIONS 0
#endif
#endif
#ifndef HYSTACK_COUNT_ALLOCATIONS
#define HYSTACK_COUNT_ALLOCATIONS 1
#endif

// GCC pairs its own new/delete when it inlines these replacements and then warns that free() gets
// a pointer from "operator new": here both sides are malloc/free, so the pairing is right.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
std::atomic<std::size_t> g_allocations{0};
}  // namespace

#if HYSTACK_COUNT_ALLOCATIONS
// Counting replacements of the global allocation functions (for the whole test binary).
void* operator new(std::size_t n) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    const std::size_t al = std::size_t(a);
    if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return ::operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
#endif

using namespace hystack;

namespace {
ModelConfig alloc_config(std::size_t window) {
    ModelConfig c;
    c.vocab_size = 64;
    auto& s = c.stack;
    s.d_model = 32;
    s.num_layers = 4;
    s.num_attention_heads = 4;
    s.num_key_value_heads = 2;
    s.sliding_window = window;
    s.mamba_d_state = 8;
    s.mamba_dt_rank = 4;
    s.intermediate_size = 48;
    s.num_experts = 4;
    s.num_experts_per_tok = 2;
    s.attn_layer_period = 4;
    s.attn_layer_offset = 1;
    return c;
}

template <class Exec>
void check_warm_decode(Exec& ex, std::size_t window) {
    CausalLM lm(alloc_config(window));
    randomize_params(lm.params(), 9);
    lm.on_weights_loaded();
    auto a = lm.make_state(64), b = lm.make_state(64);
    const std::vector<token_id> prompt{1, 2, 3, 4, 5};
    lm.prefill(prompt, a, ex);
    lm.prefill(prompt, b, ex);
    std::vector<CausalLM::State*> states{&a, &b};
    const std::vector<token_id> ids{7, 8};
    lm.step(6, a, ex);  // warm up: workspaces grow to their size
    lm.step_batch(ids, states, ex);
    const std::size_t before = g_allocations.load();
    for (int i = 0; i < 8; ++i) {
        lm.step(token_id(10 + i), a, ex);
        lm.step_batch(ids, states, ex);
    }
    const std::size_t during = g_allocations.load() - before;
    auto logits = lm.step(1, a, ex);
    CHECK(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); }));
    if (!HYSTACK_COUNT_ALLOCATIONS) return;
    CHECK(during == 0);
    // The counter counts (so the zero above means something): a state copy allocates.
    auto copy = a;
    CHECK(g_allocations.load() > before + during);
    (void)copy;
}
}  // namespace

TEST_CASE("warm decode steps allocate nothing (serial and threaded, global and window caches)", "[alloc]") {
    SerialExecutor serial;
    ThreadPool pool(2);
    for (std::size_t window : {std::size_t(0), std::size_t(8)}) {
        INFO("window " << window);
        check_warm_decode(serial, window);
        check_warm_decode(pool, window);
    }
}
