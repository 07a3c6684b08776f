// Precompiled header: LibTorch's C++ frontend is large, so it is parsed once per target.
#pragma once
#include <torch/torch.h>
