# Warnings are errors in every preset (STYLE.md). Applied to km's own targets only.
add_library(km_warnings INTERFACE)
target_compile_options(km_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Woverloaded-virtual
  -Wcast-align -Wformat=2 -Wimplicit-fallthrough -Wmissing-declarations
  -Wnull-dereference -Wundef)
if(KM_WERROR)
  target_compile_options(km_warnings INTERFACE -Werror)
endif()
