// The umbrella header: everything a LibTorch training program needs to use daifu.
#pragma once

#include <daifu/bug_checks.h>
#include <daifu/checks.h>
#include <daifu/classifier.h>
#include <daifu/detectors.h>
#include <daifu/distributed.h>
#include <daifu/entry.h>
#include <daifu/errors.h>
#include <daifu/failure.h>
#include <daifu/guard.h>
#include <daifu/inject.h>
#include <daifu/journal.h>
#include <daifu/knob.h>
#include <daifu/options.h>
#include <daifu/session.h>
#include <daifu/step.h>
#include <daifu/surgery.h>
