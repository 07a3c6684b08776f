// The check a torch archive (model.pt, resume.pt, model_int8.pt: a zip written by OutputArchive::save_to) passes before
// LibTorch reads it. LibTorch's reader trusts what it finds: a damaged file makes it allocate what a size field
// claims (gigabytes) or crash in its TorchScript type parser. So first, in code of our own over plain bytes:
//   - the zip's end record, central directory and local headers lie inside the file and agree with each other;
//   - each entry is stored or deflated, and its data (inflated by zlib) matches the CRC-32 its writer recorded;
//   - each class declaration under code/ has only the lines OutputArchive writes: attributes and their types, lists
//     of parameter and buffer names, no statements.
// Accidental damage (a truncated copy, flipped bits) fails the CRC with probability 1 - 2^-32; a file crafted to
// pass it still meets the other checks before LibTorch parses anything.
#pragma once

#include <string_view>

namespace cerebra {

// Throws std::runtime_error "damaged archive: ..." naming the entry and what is wrong.
void check_torch_archive(std::string_view bytes);

}  // namespace cerebra
