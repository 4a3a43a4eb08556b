# Warnings are errors in every preset (STYLE.md). Applied to km's own targets only.
add_library(km_warnings INTERFACE)
target_compile_options(km_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Woverloaded-virtual
  -Wcast-align -Wformat=2 -Wimplicit-fallthrough -Wmissing-declarations
  -Wnull-dereference -Wundef)
# GCC 12 at -O3 reports -Wrestrict inside libstdc++'s std::string (GCC bug 105329): a false
# positive on correct code, so that one warning is off for GCC.
target_compile_options(km_warnings INTERFACE $<$<CXX_COMPILER_ID:GNU>:-Wno-restrict>)
if(KM_WERROR)
  target_compile_options(km_warnings INTERFACE -Werror)
endif()
