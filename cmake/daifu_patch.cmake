# daifu_add_patch(<name> <source>...)
# Builds a hot patch: a shared library <name>.so whose sources define their entry point with
# DAIFU_PATCH(function) from <daifu/patch.h>, compiled against the same daifu and libtorch as
# the training program. Copy it into <workplace>/patches/ (docs/hot-patching.md).
function(daifu_add_patch name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE daifu::daifu)
  set_target_properties(${name} PROPERTIES PREFIX "" CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
endfunction()
