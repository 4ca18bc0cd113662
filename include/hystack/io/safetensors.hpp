#pragma once
#include "../core/module.hpp"

// safetensors (https://github.com/huggingface/safetensors) files and checkpoints. Everything read
// from a file is untrusted: every malformed file gets a hystack::error naming the file and the
// problem (never a crash, hang or allocation sized by the file's claims).
//
// The pieces:
//   safetensors_format.hpp  the format: header limit, dtypes, F16 -> float, shapes, TensorInfo
//   mapped_file.hpp         the bytes of a file: mmap where POSIX has it (pread for copies), else read
//   safetensors_header.hpp  parsing (SAX) and validating a header against the data section
//   safetensors_reader.hpp  SafetensorsFile: tensor info, raw bytes, in-place views, reads as float
//   safetensors_writer.hpp  write_safetensors, write_safetensors_raw
//   json_file.hpp           small JSON files read strictly (size limit, duplicate keys refused)
//   checkpoint.hpp          Checkpoint: one model.safetensors or shards named by index.json

#include "safetensors_format.hpp"
#include "mapped_file.hpp"
#include "safetensors_header.hpp"
#include "safetensors_reader.hpp"
#include "safetensors_writer.hpp"
#include "json_file.hpp"
#include "checkpoint.hpp"
