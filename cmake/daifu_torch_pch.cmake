# One precompiled <torch/torch.h> for the programs built in this tree (tests, examples,
# benchmarks). <torch/torch.h> is most of what a test or example file costs to compile
# (docs/build-time.md); the header is parsed once, by daifu_torch_pch, and reused.
#
# daifu_share_torch_pch(<target>...): the targets compile with that precompiled header. They
# must compile with the same flags as daifu_torch_pch: executables or static libraries, not
# position-independent code (GCC would reject the header, warn through -Winvalid-pch and
# compile without it).
if(DAIFU_TORCH_PCH)
  file(WRITE ${CMAKE_BINARY_DIR}/daifu_torch_pch.cpp "// the precompiled <torch/torch.h> is built with this file\n")
  add_library(daifu_torch_pch OBJECT ${CMAKE_BINARY_DIR}/daifu_torch_pch.cpp)
  target_link_libraries(daifu_torch_pch PRIVATE torch)
  target_precompile_headers(daifu_torch_pch PRIVATE <torch/torch.h>)
  target_compile_options(daifu_torch_pch PRIVATE -Winvalid-pch)
endif()

function(daifu_share_torch_pch)
  if(NOT DAIFU_TORCH_PCH)
    return()
  endif()
  foreach(_target ${ARGN})
    target_precompile_headers(${_target} REUSE_FROM daifu_torch_pch)
    target_compile_options(${_target} PRIVATE -Winvalid-pch)
  endforeach()
endfunction()
