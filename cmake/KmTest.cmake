# km_add_unit_test(NAME SOURCES... LIBS ...): a GoogleTest binary labelled `unit`.
function(km_add_gtest name)
  cmake_parse_arguments(T "" "LABEL" "SOURCES;LIBS" ${ARGN})
  if(NOT T_LABEL)
    set(T_LABEL unit)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main km_warnings)
  gtest_discover_tests(${name}
    PROPERTIES LABELS ${T_LABEL}
    ENVIRONMENT "KM_SOURCE_DIR=${CMAKE_SOURCE_DIR}"
    DISCOVERY_TIMEOUT 60)
endfunction()
