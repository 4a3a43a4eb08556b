// km-sandbox-init: PID 1 of every sandbox. Started by kmd only; see km/sandbox/init.h.
#include "km/sandbox/init.h"

int main() { return km::sandbox::init_main(); }
