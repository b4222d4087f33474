// The course guide never drifts from the code. In docs/*.md and README files:
//  - a code block after <!-- excerpt: PATH --> must appear in PATH, line for line
//    (a line "// ..." in the block skips over code);
//  - a diff block after <!-- diff: OLD NEW --> must be a true diff: its context and "-" lines
//    appear in OLD, its context and "+" lines in NEW, in order ("@@" lines skip over code);
//  - a link [`text`](PATH#LN) must point at a line of PATH that contains text.
#define BOOST_TEST_MODULE docs
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include <filesystem>
#include <regex>
#include <sstream>

namespace bdata = boost::unit_test::data;
namespace fs = std::filesystem;
using namespace poetry::test;

namespace {

std::vector<std::string> lines_of(const std::string& text)
{
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

// The documents to check: every Markdown file under docs/ and every model's README.
std::vector<std::string> documents()
{
  std::vector<std::string> docs;
  fs::path root = source_dir();
  for (const auto& entry : fs::recursive_directory_iterator(root))
    if (entry.path().extension() == ".md" && entry.path().string().find("/build") == std::string::npos &&
        entry.path().string().find("/.git/") == std::string::npos)
      docs.push_back(fs::relative(entry.path(), root).string());
  std::sort(docs.begin(), docs.end());
  return docs;
}

// Does every segment (split where skip() says) appear in file, in order, each contiguously?
bool appears_in_order(const std::vector<std::string>& file, const std::vector<std::vector<std::string>>& segments,
                      std::string& missing)
{
  std::size_t from = 0;
  for (const auto& segment : segments) {
    if (segment.empty()) continue;
    bool found = false;
    for (std::size_t at = from; at + segment.size() <= file.size() && !found; ++at) {
      if (std::equal(segment.begin(), segment.end(), file.begin() + static_cast<long>(at))) {
        from = at + segment.size();
        found = true;
      }
    }
    if (!found) {
      missing = segment.front();
      return false;
    }
  }
  return true;
}

struct block {
  std::string kind;  // "excerpt" or "diff"
  std::vector<std::string> paths;
  std::vector<std::string> lines;
  std::size_t line_number;
};

std::vector<block> blocks_of(const std::vector<std::string>& doc)
{
  static const std::regex marker(R"(<!--\s*(excerpt|diff):\s*([^>]*?)\s*-->)");
  std::vector<block> blocks;
  for (std::size_t i = 0; i < doc.size(); ++i) {
    std::smatch m;
    if (!std::regex_search(doc[i], m, marker)) continue;
    block b{m[1], {}, {}, i + 1};
    std::istringstream paths(m[2].str());
    for (std::string p; paths >> p;) b.paths.push_back(p);
    std::size_t open = i + 1;
    while (open < doc.size() && doc[open].rfind("```", 0) != 0) ++open;
    for (std::size_t j = open + 1; j < doc.size() && doc[j].rfind("```", 0) != 0; ++j) b.lines.push_back(doc[j]);
    blocks.push_back(b);
  }
  return blocks;
}

std::string trim(const std::string& s)
{
  auto a = s.find_first_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a);
}

}  // namespace

BOOST_DATA_TEST_CASE(excerpts_diffs_and_links_match_the_code, bdata::make(documents()), doc_path)
{
  fs::path root = source_dir();
  auto doc = lines_of(read_file((root / doc_path).string()));
  auto load = [&](const std::string& path) { return lines_of(read_file((root / path).string())); };

  for (const auto& b : blocks_of(doc)) {
    BOOST_TEST_CONTEXT(doc_path << ":" << b.line_number) {
      if (b.kind == "excerpt") {
        BOOST_TEST_REQUIRE(b.paths.size() == 1u);
        BOOST_TEST_REQUIRE(fs::exists(root / b.paths[0]), b.paths[0] << " does not exist");
        std::vector<std::vector<std::string>> segments(1);
        for (const auto& line : b.lines) {
          if (trim(line) == "// ..." || trim(line) == "...") segments.emplace_back();
          else segments.back().push_back(line);
        }
        std::string missing;
        BOOST_TEST(appears_in_order(load(b.paths[0]), segments, missing),
                   "excerpt of " << b.paths[0] << " no longer matches at: " << missing);
      } else {
        BOOST_TEST_REQUIRE(b.paths.size() == 2u);
        std::vector<std::vector<std::string>> before(1), after(1);
        for (const auto& line : b.lines) {
          if (line.rfind("@@", 0) == 0) {
            before.emplace_back();
            after.emplace_back();
            continue;
          }
          char sign = line.empty() ? ' ' : line[0];
          std::string text = line.empty() ? "" : line.substr(1);
          if (sign != '+') before.back().push_back(text);
          if (sign != '-') after.back().push_back(text);
        }
        std::string missing;
        BOOST_TEST(appears_in_order(load(b.paths[0]), before, missing),
                   "diff's old side no longer matches " << b.paths[0] << " at: " << missing);
        BOOST_TEST(appears_in_order(load(b.paths[1]), after, missing),
                   "diff's new side no longer matches " << b.paths[1] << " at: " << missing);
      }
    }
  }

  // Links to lines: [`text`](../path#L12) — the line must contain text.
  static const std::regex link(R"(\[`([^`]+)`\]\(([^)#\s]+)#L(\d+)\))");
  fs::path doc_dir = (root / doc_path).parent_path();
  for (std::size_t i = 0; i < doc.size(); ++i) {
    for (std::sregex_iterator it(doc[i].begin(), doc[i].end(), link), end; it != end; ++it) {
      std::string text = (*it)[1], target = (*it)[2];
      std::size_t number = std::stoul((*it)[3]);
      fs::path file = fs::weakly_canonical(doc_dir / target);
      BOOST_TEST_CONTEXT(doc_path << ":" << i + 1 << " links " << target << "#L" << number) {
        BOOST_TEST_REQUIRE(fs::exists(file));
        auto lines = load(fs::relative(file, root).string());
        bool ok = number >= 1 && number <= lines.size() && lines[number - 1].find(text) != std::string::npos;
        std::string hint;
        for (std::size_t n = 0; n < lines.size() && !ok && hint.empty(); ++n)
          if (lines[n].find(text) != std::string::npos) hint = " (it is on line " + std::to_string(n + 1) + ")";
        BOOST_TEST(ok, "line " << number << " does not contain `" << text << "`" << hint);
      }
    }
  }
}
