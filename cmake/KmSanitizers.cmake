# ASan + UBSan for the `asan` preset; UBSan findings abort so tests cannot pass over them.
if(KM_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

# The `fuzz` preset: every km library carries coverage instrumentation for libFuzzer, with
# ASan and UBSan; fuzz targets link the libFuzzer driver (fuzz/CMakeLists.txt).
if(KM_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
