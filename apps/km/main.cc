// km: the command-line client. Everything lives in km::cli; this only hands over argv.
#include "km/cli/app.h"

int main(int argc, char** argv) { return km::cli::run(argc, argv); }
