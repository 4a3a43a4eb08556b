# ASan + UBSan for the `asan` preset; UBSan findings abort so tests cannot pass over them.
if(KM_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
