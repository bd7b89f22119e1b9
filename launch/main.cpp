// The `linea` command line (placeholder until the CLI lands).
#include <cstdio>

int main() {
  std::printf("linea %s\n", LINEA_VERSION);
  return 0;
}
