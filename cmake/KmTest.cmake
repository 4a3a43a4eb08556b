# km_add_gtest(NAME SOURCES ... LIBS ... [LABEL l] [DEFINES K=V ...]): a GoogleTest binary whose
# tests are registered with ctest individually, labelled `unit` unless LABEL says otherwise.
function(km_add_gtest name)
  cmake_parse_arguments(T "" "LABEL" "SOURCES;LIBS;DEFINES" ${ARGN})
  if(NOT T_LABEL)
    set(T_LABEL unit)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main km_warnings)
  target_compile_definitions(${name} PRIVATE KM_SOURCE_DIR="${CMAKE_SOURCE_DIR}" ${T_DEFINES})
  gtest_discover_tests(${name}
    PROPERTIES LABELS ${T_LABEL}
    DISCOVERY_TIMEOUT 60)
endfunction()
