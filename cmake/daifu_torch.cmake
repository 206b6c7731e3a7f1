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

# daifu_torch_cxx_standard(<var>): the C++ standard the found LibTorch's headers need: 20 from
# LibTorch 2.14 on (its headers #error on anything older), 17 before.
function(daifu_torch_cxx_standard var)
  if(Torch_VERSION VERSION_GREATER_EQUAL 2.14)
    set(${var} 20 PARENT_SCOPE)
  else()
    set(${var} 17 PARENT_SCOPE)
  endif()
endfunction()

# daifu_torch_use_nccl(<found_var> <target>...): compiles each target with USE_C10D_NCCL, NCCL's
# header and the CUDA math libraries' headers that ATen's CUDA context includes (cusparse.h,
# cublas_v2.h, ...), for <daifu/nccl_group.h>, where the found LibTorch is a CUDA build and the
# headers are at hand: in the LibTorch's include/ or the CUDA toolkit's, in a torch wheel's
# nvidia/ folders, or the system's. Sets <found_var> ON if it did, OFF if not (the targets
# then have Gloo only).
function(daifu_torch_use_nccl found_var)
  set(${found_var} OFF PARENT_SCOPE)
  daifu_torch_describe(_version _cuda)
  if(NOT _cuda)
    return()
  endif()
  find_path(DAIFU_NCCL_INCLUDE_DIR nccl.h
            HINTS "${TORCH_INSTALL_PREFIX}/include" "${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include")
  find_path(DAIFU_CUDA_MATH_INCLUDE_DIR cusparse.h
            HINTS ${CUDAToolkit_INCLUDE_DIRS} "${TORCH_INSTALL_PREFIX}/include"
                  "${TORCH_INSTALL_PREFIX}/../nvidia/cu13/include" "${TORCH_INSTALL_PREFIX}/../nvidia/cusparse/include")
  if(NOT DAIFU_NCCL_INCLUDE_DIR OR NOT DAIFU_CUDA_MATH_INCLUDE_DIR)
    message(STATUS "daifu: no nccl.h or cusparse.h next to LibTorch ${Torch_VERSION}: ${ARGN} without NCCL")
    return()
  endif()
  foreach(_target IN LISTS ARGN)
    target_compile_definitions(${_target} PRIVATE USE_C10D_NCCL)
    target_include_directories(${_target} PRIVATE "${DAIFU_NCCL_INCLUDE_DIR}" "${DAIFU_CUDA_MATH_INCLUDE_DIR}")
  endforeach()
  set(${found_var} ON PARENT_SCOPE)
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
