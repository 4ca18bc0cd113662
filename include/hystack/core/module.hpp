// Internal: every hystack internal header starts by including this file. It refuses direct
// inclusion of internal headers, so users see one stable surface: <hystack/hystack.hpp> or a
// module header (<hystack/core.hpp>, <hystack/kernels.hpp>, ...).
#ifndef HYSTACK_MODULE
#error "hystack: include <hystack/hystack.hpp> or a module header such as <hystack/core.hpp>, not an internal header"
#endif
