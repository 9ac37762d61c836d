#include "cli/cli.h"

int main(int argc, char** argv) { return kato::RunCli(argc, argv); }
