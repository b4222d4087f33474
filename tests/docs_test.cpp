// The course guide never drifts from the code. In docs/*.md and README files:
//  - a code block after <!-- excerpt: PATH --> (alone on its line) must appear in PATH, line for line
//    (a line "// ..." in the block skips over code);
//  - a diff block after <!-- diff: OLD NEW --> must be a true diff: its context and "-" lines
//    appear in OLD, its context and "+" lines in NEW, in order ("@@" lines skip over code);
//  - a link [`text`](PATH#LN) must point at a line of PATH that contains text;
//  - a link [`text`](PATH) followed by " (N lines)" must give PATH's number of lines, and the
//    sentences of diff_sizes (below) the number of lines each diff between two models changes.
// And the guarantee cannot quietly vanish: every chapter docs/NN-*.md keeps checked excerpts
// and diffs, and the socket API map (docs/socket-api.md) keeps its checked links.
#define BOOST_TEST_MODULE docs
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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
  static const std::regex marker(R"(^\s*<!--\s*(excerpt|diff):\s*([^>]*?)\s*-->\s*$)");  // alone on its line
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

// Links to lines: [`text`](../path#L12).
const std::regex& line_link()
{
  static const std::regex link(R"(\[`([^`]+)`\]\(([^)#\s]+)#L(\d+)\))");
  return link;
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
    BOOST_TEST_CONTEXT(doc_path << ":" << b.line_number)
    {
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

  // Links to lines: the line must contain the link's text. The failure names the nearest line
  // that does; with POETRY_FIX_DOC_LINKS=1 in the environment the link is moved there.
  const std::regex& link = line_link();
  fs::path doc_dir = (root / doc_path).parent_path();
  bool fix = std::getenv("POETRY_FIX_DOC_LINKS") != nullptr;
  std::vector<std::string> fixed = doc;
  bool changed = false;
  for (std::size_t i = 0; i < doc.size(); ++i) {
    std::string rebuilt;
    std::size_t copied = 0;
    for (std::sregex_iterator it(doc[i].begin(), doc[i].end(), link), end; it != end; ++it) {
      std::string text = (*it)[1], target = (*it)[2];
      std::size_t number = std::stoul((*it)[3]);
      fs::path file = fs::weakly_canonical(doc_dir / target);
      BOOST_TEST_CONTEXT(doc_path << ":" << i + 1 << " links " << target << "#L" << number)
      {
        BOOST_TEST_REQUIRE(fs::exists(file));
        auto lines = load(fs::relative(file, root).string());
        bool ok = number >= 1 && number <= lines.size() && lines[number - 1].find(text) != std::string::npos;
        std::size_t nearest = 0;  // 1-based; 0: nowhere
        for (std::size_t n = 1; n <= lines.size() && !ok; ++n)
          if (lines[n - 1].find(text) != std::string::npos &&
              (nearest == 0 ||
               (n > number ? n - number : number - n) < (nearest > number ? nearest - number : number - nearest)))
            nearest = n;
        std::string hint = nearest ? " (the nearest is line " + std::to_string(nearest) + ")" : "";
        BOOST_TEST(ok, "line " << number << " does not contain `" << text << "`" << hint);
        if (!ok && fix && nearest) {
          auto at = static_cast<std::size_t>(it->position(3));
          rebuilt += doc[i].substr(copied, at - copied) + std::to_string(nearest);
          copied = at + static_cast<std::size_t>(it->length(3));
          changed = true;
        }
      }
    }
    if (copied > 0) fixed[i] = rebuilt + doc[i].substr(copied);
  }
  if (changed) {
    std::ofstream out(root / doc_path);
    for (const auto& line : fixed) out << line << '\n';
    BOOST_TEST_MESSAGE(doc_path << ": links moved to the nearest line with their text; check them");
  }
}

// The checks above pass on a chapter with nothing to check, so a chapter whose markers were
// lost (or that was never given any) would pass too. Every chapter keeps at least three checked
// excerpts or diffs, every chapter after the first at least one diff against its predecessor,
// and the socket API map at least one checked link per row.
BOOST_AUTO_TEST_CASE(every_chapter_keeps_checked_code)
{
  fs::path docs = fs::path(source_dir()) / "docs";
  static const std::regex chapter(R"(\d\d-[^/]*\.md)");
  std::size_t chapters = 0;
  for (const auto& entry : fs::directory_iterator(docs)) {
    std::string name = entry.path().filename().string();
    if (!std::regex_match(name, chapter)) continue;
    ++chapters;
    auto blocks = blocks_of(lines_of(read_file(entry.path().string())));
    auto diffs = std::count_if(blocks.begin(), blocks.end(), [](const block& b) { return b.kind == "diff"; });
    BOOST_TEST_CONTEXT("docs/" << name)
    {
      BOOST_TEST(blocks.size() >= 3u, "only " << blocks.size() << " checked excerpts or diffs");
      if (name.rfind("01-", 0) != 0) BOOST_TEST(diffs >= 1, "no checked diff against the previous model");
    }
  }
  BOOST_TEST(chapters >= 5u, "found " << chapters << " chapters docs/NN-*.md");

  std::size_t links = 0, rows = 0;
  for (const auto& line : lines_of(read_file((docs / "socket-api.md").string()))) {
    if (line.rfind("| `", 0) == 0) ++rows;
    links += static_cast<std::size_t>(
      std::distance(std::sregex_iterator(line.begin(), line.end(), line_link()), std::sregex_iterator()));
  }
  BOOST_TEST(rows >= 20u, "docs/socket-api.md maps only " << rows << " calls");
  BOOST_TEST(links >= rows, "docs/socket-api.md has " << links << " checked links for " << rows << " calls");
}

namespace {

// A file's lines exactly as diff(1) compares them.
std::vector<std::string> raw_lines_of(const std::string& path)
{
  std::vector<std::string> lines;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Lines added or removed between two files, as `diff --minimal OLD NEW | grep -c '^[<>]'` counts
// them: every line of either file outside their longest common subsequence.
std::size_t changed_lines(const std::string& old_path, const std::string& new_path)
{
  auto a = raw_lines_of(old_path), b = raw_lines_of(new_path);
  std::vector<std::size_t> previous(b.size() + 1, 0), current(b.size() + 1, 0);
  for (const auto& line : a) {
    for (std::size_t j = 0; j < b.size(); ++j)
      current[j + 1] = line == b[j] ? previous[j] + 1 : std::max(previous[j + 1], current[j]);
    std::swap(previous, current);
  }
  return a.size() + b.size() - 2 * previous[b.size()];
}

// Rewrites a document in place (POETRY_FIX_DOC_LINKS=1).
void rewrite(const fs::path& file, const std::vector<std::string>& lines)
{
  std::ofstream out(file);
  for (const auto& line : lines) out << line << '\n';
}

// Sentences that state the size of a diff between two models. In each, {diff OLD NEW} stands
// for changed_lines(OLD, NEW); the document must contain the sentence with the numbers in their
// places (a line break counts as a space). When a model changes, this test names the sentence,
// and POETRY_FIX_DOC_LINKS=1 puts the new numbers in.
struct quotation {
  const char* document;
  const char* text;
};
const quotation diff_sizes[] = {
  {"docs/06-asio-coroutines.md",
   "{diff blocking/server.cpp asio_coroutines/server.cpp} lines added or removed; for comparison, blocking to "
   "threaded has {diff blocking/server.cpp threaded/server.cpp}, threaded to select "
   "{diff threaded/server.cpp select/server.cpp}, select to callbacks "
   "{diff select/server.cpp asio_callbacks/server.cpp}, callbacks to protocol "
   "{diff asio_callbacks/server.cpp asio_protocol/server.cpp}, callbacks to coroutines "
   "{diff asio_callbacks/server.cpp asio_coroutines/server.cpp} (counted as "
   "`diff --minimal OLD NEW | grep -c '^[<>]'`)"},
};

}  // namespace

// "[`PATH`](LINK) (N lines)", as in every chapter's header: N is the number of lines of the
// linked file, now. With POETRY_FIX_DOC_LINKS=1 the numbers are rewritten.
BOOST_DATA_TEST_CASE(stated_line_counts_match_the_files, bdata::make(documents()), doc_path)
{
  static const std::regex counted(R"(\[`[^`]+`\]\(([^)#\s]+)\) \((\d+) lines\))");
  fs::path root = source_dir();
  fs::path doc_dir = (root / doc_path).parent_path();
  auto doc = lines_of(read_file((root / doc_path).string()));
  bool fix = std::getenv("POETRY_FIX_DOC_LINKS") != nullptr, changed = false;
  for (auto& line : doc) {
    std::string rebuilt;
    auto copied = line.cbegin();
    for (std::sregex_iterator it(line.begin(), line.end(), counted), end; it != end; ++it) {
      fs::path file = fs::weakly_canonical(doc_dir / (*it)[1].str());
      BOOST_TEST_CONTEXT(doc_path << ": " << (*it)[0])
      {
        BOOST_TEST_REQUIRE(fs::is_regular_file(file), file << " does not exist");
        std::size_t stated = std::stoul((*it)[2]), actual = raw_lines_of(file.string()).size();
        BOOST_TEST(stated == actual, (*it)[1] << " has " << actual << " lines, not " << stated);
        rebuilt.append(copied, (*it)[2].first).append(std::to_string(actual));
        copied = (*it)[2].second;
        changed |= stated != actual;
      }
    }
    if (!rebuilt.empty()) line = rebuilt + std::string(copied, line.cend());
  }
  if (fix && changed) {
    rewrite(root / doc_path, doc);
    BOOST_TEST_MESSAGE(doc_path << ": line counts rewritten; check them with git diff");
  }
}

BOOST_AUTO_TEST_CASE(stated_diff_sizes_match_the_models)
{
  static const std::regex placeholder(R"(\{diff (\S+) (\S+)\})");
  static const std::regex special(R"([.^$|()\[\]{}*+?\\])");
  fs::path root = source_dir();
  bool fix = std::getenv("POETRY_FIX_DOC_LINKS") != nullptr;
  for (const quotation& q : diff_sizes) {
    BOOST_TEST_CONTEXT(q.document)
    {
      // The sentence as a pattern: its words as they are (any run of blanks matching any run),
      // each placeholder a number, which must be the diff's size now.
      std::string text = q.text, pattern;
      std::vector<std::size_t> sizes;
      auto at = text.cbegin();
      auto literal = [&](std::string piece) {
        piece = std::regex_replace(piece, special, "\\$&");
        pattern += std::regex_replace(piece, std::regex(R"(\s+)"), "\\s+");
      };
      for (std::sregex_iterator it(text.begin(), text.end(), placeholder), end; it != end; ++it) {
        literal(std::string(at, (*it)[0].first));
        pattern += "(\\d+)";
        sizes.push_back(changed_lines((root / (*it)[1].str()).string(), (root / (*it)[2].str()).string()));
        at = (*it)[0].second;
      }
      literal(std::string(at, text.cend()));
      std::string document = read_file((root / q.document).string());
      std::smatch m;
      BOOST_TEST_REQUIRE(std::regex_search(document, m, std::regex(pattern)),
                         "the sentence is gone or reworded; update docs_test's diff_sizes: \"" << q.text << "\"");
      std::string fixed;
      auto copied = document.cbegin();
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        std::size_t stated = std::stoul(m[i + 1]);
        BOOST_TEST(stated == sizes[i],
                   "diff " << i + 1 << " of the sentence is " << sizes[i] << " lines, not " << stated);
        fixed.append(copied, m[i + 1].first).append(std::to_string(sizes[i]));
        copied = m[i + 1].second;
      }
      fixed.append(copied, document.cend());
      if (fix && fixed != document) {
        std::ofstream(root / q.document) << fixed;
        BOOST_TEST_MESSAGE(q.document << ": diff sizes rewritten; check them with git diff");
      }
    }
  }
}
