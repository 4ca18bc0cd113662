#pragma once
#include "../core/module.hpp"

// Flash-style causal / sliding-window softmax attention with grouped-query heads (GQA/MQA).
//
// One kernel, tiled over keys with the online softmax: per query row it keeps a running max m,
// a running sum l and an unnormalised output O; a key tile updates them as
//   m' = max(m, max_j s_j),  O' = O e^(m - m') + sum_j e^(s_j - m') v_j,  l' = l e^(m - m') + sum_j e^(s_j - m')
// and out = O / l at the end. No L x L score matrix exists; scratch is O(tile) per thread.
// Scores are q.k * scale; the max is subtracted before exp, so scores of +-1e4 stay exact.
// Visibility of key position j to a query at absolute position i:
//   j <= i  and  (window == 0 or i - j < window)        (HF sliding_window, llama.cpp SWA)
// A row that sees no key at all yields zeros (never NaN).
//
// Two inner loops, chosen by shape, both exact to fp32 rounding: "lane" (prefill, any head_dim) and
// "dot" (decode, one query per sequence, head_dim 64 or 128). Keys come as a KVView: up to 4 segments
// of consecutive absolute positions (a cache's part(s) and the new keys of this call), each with its
// own pointers and strides (see KVSegment).
//
// The pieces:
//   kv_view.hpp            kv_tile, KVSegment, KVView: the keys and values the kernels read
//   attention_common.hpp   AttentionDims, AttentionWorkspace, AttentionPath, visibility and checks
//   attention_scalar.hpp   the scalar flash loop and attention_reference (double, explicit softmax)
//   attention_lane.hpp     the lane inner loop (register-tiled QK, softmax, PV over query blocks)
//   attention_decode.hpp   the dot inner loop and attention_decode (n_seq sequences, one query each)
//   attention_prefill.hpp  attention(): L queries at positions past.., and the serial overload

#include "kv_view.hpp"
#include "attention_common.hpp"
#include "attention_scalar.hpp"
#include "attention_lane.hpp"
#include "attention_decode.hpp"
#include "attention_prefill.hpp"
