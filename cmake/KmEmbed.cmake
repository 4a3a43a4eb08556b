# km_embed_files(OUT_CC NAMESPACE FILES...): generate a .cc that holds each file's bytes,
# so built-in data (profiles) ships inside the binary and cannot drift from the source tree.
function(km_embed_files out_cc symbol)
  set(files ${ARGN})
  add_custom_command(
    OUTPUT ${out_cc}
    COMMAND ${CMAKE_COMMAND} -DOUT=${out_cc} -DSYMBOL=${symbol} "-DFILES=${files}"
            -P ${CMAKE_SOURCE_DIR}/cmake/KmEmbedScript.cmake
    DEPENDS ${files} ${CMAKE_SOURCE_DIR}/cmake/KmEmbedScript.cmake
    COMMENT "Embedding ${symbol}"
    VERBATIM)
endfunction()
