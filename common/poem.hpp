// The poem a server sends: read once, at start-up, before anything listens.
#pragma once

#include <cstddef>
#include <string>

namespace poetry {

// The whole file, byte for byte. Throws std::runtime_error naming the file and the reason
// (missing, unreadable, not a regular file).
std::string load_poem(const std::string& path);

// The ideal time for one poem: the first chunk goes at once, then one every delay.
double ideal_seconds(std::size_t poem_size, std::size_t num_bytes, double delay_seconds);

}  // namespace poetry
