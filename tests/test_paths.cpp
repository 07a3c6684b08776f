// The paths of this checkout and build, compiled into this file alone (CMakeLists.txt).
#include "test_helpers.h"

namespace cerebra::test {

std::string source_path(const std::string& rel) { return std::string(CEREBRA_SOURCE_DIR) + "/" + rel; }

std::string cerebra_binary() { return CEREBRA_BINARY; }

}  // namespace cerebra::test
