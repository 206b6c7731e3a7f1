# Which LibTorch daifu is built against, and checks that it is one LibTorch, not two.
# Included by daifu's own CMakeLists.txt (after find_package(Torch)) and by the installed
# daifuConfig.cmake (after find_dependency(Torch)).

# daifu_torch_describe(<version_var> <cuda_var>): the found LibTorch's version ("2.13.0") and
# whether it is a CUDA build (ON/OFF).
function(daifu_torch_describe version_var cuda_var)
  set(${version_var} "${Torch_VERSION}" PARENT_SCOPE)
  if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda)
    set(${cuda_var} ON PARENT_SCOPE)
  else()
    set(${cuda_var} OFF PARENT_SCOPE)
  endif()
endfunction()

# daifu_torch_check_one(<error_var>): sets <error_var> to a message when the found TorchConfig
# took libtorch.so from another installation than its own headers (a torch wheel's
# share/cmake given as CMAKE_PREFIX_PATH next to a system libtorch: find_library searches the
# system directories before the config's own lib/). Empty when all is well.
function(daifu_torch_check_one error_var)
  set(${error_var} "" PARENT_SCOPE)
  if(NOT TORCH_INSTALL_PREFIX OR NOT TORCH_LIBRARY)
    return()
  endif()
  get_filename_component(_prefix "${TORCH_INSTALL_PREFIX}" REALPATH)
  get_filename_component(_library "${TORCH_LIBRARY}" REALPATH)
  string(FIND "${_library}" "${_prefix}/" _at)
  if(NOT _at EQUAL 0)
    string(CONCAT _message
           "LibTorch ${Torch_VERSION}'s config (${Torch_DIR}) found another installation's library "
           "${TORCH_LIBRARY}. Point CMAKE_PREFIX_PATH at the LibTorch root, e.g. "
           "-DCMAKE_PREFIX_PATH=${TORCH_INSTALL_PREFIX} (for a torch wheel: the folder of "
           "torch/__init__.py), not at its share/cmake folder.")
    set(${error_var} "${_message}" PARENT_SCOPE)
  endif()
endfunction()
