# BPF programs (STYLE.md): C in bpf/progs, compiled by clang at build time against the running
# kernel's BTF (CO-RE), and embedded with `bpftool gen skeleton`. Generated files live in the
# build tree only.
#
#   km_bpf_skeleton(NAME exec_audit SOURCE bpf/progs/exec_audit.bpf.c)
#     -> ${KM_BPF_GEN_DIR}/exec_audit.skel.h, a dependency of target km_bpf_skeletons
find_program(KM_CLANG NAMES clang clang-14 REQUIRED)
find_program(KM_BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)
set(KM_BPF_GEN_DIR ${CMAKE_BINARY_DIR}/bpf-gen)
set(KM_BTF_SOURCE /sys/kernel/btf/vmlinux CACHE FILEPATH "Kernel BTF for vmlinux.h (CO-RE)")
file(MAKE_DIRECTORY ${KM_BPF_GEN_DIR})

add_custom_target(km_bpf_skeletons)

# All skeletons are declared in one directory (src/km/bpf), where vmlinux.h's rule lives too.
function(km_bpf_skeleton)
  cmake_parse_arguments(B "" "NAME;SOURCE" "" ${ARGN})
  get_directory_property(have_vmlinux KM_BPF_VMLINUX_RULE)
  if(NOT have_vmlinux)
    add_custom_command(
      OUTPUT ${KM_BPF_GEN_DIR}/vmlinux.h
      COMMAND ${KM_BPFTOOL} btf dump file ${KM_BTF_SOURCE} format c > ${KM_BPF_GEN_DIR}/vmlinux.h
      COMMENT "Generating vmlinux.h from ${KM_BTF_SOURCE}"
      VERBATIM)
    set_directory_properties(PROPERTIES KM_BPF_VMLINUX_RULE ON)
  endif()
  set(obj ${KM_BPF_GEN_DIR}/${B_NAME}.bpf.o)
  set(skel ${KM_BPF_GEN_DIR}/${B_NAME}.skel.h)
  file(GLOB abi_headers ${CMAKE_SOURCE_DIR}/bpf/include/km/bpf_abi/*.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${KM_CLANG} -target bpf -O2 -g -D__TARGET_ARCH_x86 -Wall -Werror
            -I${KM_BPF_GEN_DIR} -I${CMAKE_SOURCE_DIR}/bpf/include
            -c ${CMAKE_SOURCE_DIR}/${B_SOURCE} -o ${obj}
    DEPENDS ${CMAKE_SOURCE_DIR}/${B_SOURCE} ${KM_BPF_GEN_DIR}/vmlinux.h ${abi_headers}
    COMMENT "Compiling BPF ${B_SOURCE}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${KM_BPFTOOL} gen skeleton ${obj} name ${B_NAME} > ${skel}
    DEPENDS ${obj}
    COMMENT "Generating BPF skeleton ${B_NAME}.skel.h"
    VERBATIM)
  add_custom_target(km_bpf_${B_NAME} DEPENDS ${skel})
  add_dependencies(km_bpf_skeletons km_bpf_${B_NAME})
endfunction()
