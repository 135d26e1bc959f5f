// Writes the seed corpora of the fuzz targets: make-fuzz-seeds DIR_PARSE DIR_SNAPSHOT
#include <cstdio>
#include <fstream>
#include <string>

#include "seeds.hpp"

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s PARSE_CORPUS_DIR SNAPSHOT_CORPUS_DIR\n", argv[0]);
        return 2;
    }
    int i = 0;
    for (const auto& p : fuzzseeds::sample_packets()) {
        std::ofstream(std::string(argv[1]) + "/seed" + std::to_string(i++), std::ios::binary)
            .write(reinterpret_cast<const char*>(p.data()), static_cast<std::streamsize>(p.size()));
    }
    auto snap = fuzzseeds::sample_snapshot();
    for (char mode : {'\0', '\1'}) {
        std::ofstream o(std::string(argv[2]) + "/seed" + std::to_string(int(mode)), std::ios::binary);
        o.put(mode);
        o.write(reinterpret_cast<const char*>(snap.data()), static_cast<std::streamsize>(snap.size()));
    }
    return 0;
}
