// plot: draws the race's E(C) = T(C)/T(1) against C as an SVG, one line per model, both axes
// on a log scale (so E = C, one client after another, is a straight diagonal and E = 1, every
// client at once, is flat). Reads the CSV that scripts/bench writes: the rows whose section is
// "race", by the columns model, clients, delay_s and e.
//
// With --memory-svg it also draws the memory each connection costs, one bar per model that ran
// 100 clients or more: the server's peak resident memory at its largest C less its peak with one
// client at the same delay,
// divided by C (columns peak_rss_kib), and beside it the kernel's TCP socket buffer pages at that
// run's peak (/proc/net/sockstat, column tcp_mem_pages_peak, both ends of each connection) over C.
#include "common/errors.hpp"
#include "common/options.hpp"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace po = boost::program_options;
using poetry::usage_error;

struct plot_options {
  std::string csv_file;
  std::string svg_file;
  std::string memory_svg_file;
  std::string title = "The race: E(C) = T(C) / T(1)";
};

std::optional<plot_options> parse_options(int argc, const char* const argv[])
{
  plot_options result;
  po::options_description options("Options");
  options.add_options()("csv", po::value(&result.csv_file), "the CSV scripts/bench wrote (required)")(
    "svg", po::value(&result.svg_file), "the SVG file of E(C) to write")(
    "memory-svg", po::value(&result.memory_svg_file), "the SVG file of memory per connection to write")(
    "title", po::value(&result.title), "the plot's title")("help,h", "print this help, then exit");
  po::variables_map vm = poetry::parse_command_line(argc, argv, options);
  if (vm.count("help")) {
    std::cout << "Usage: plot --csv FILE [--svg FILE] [--memory-svg FILE] [--title TEXT]\n"
                 "Draws E(C) against C from the race rows of a scripts/bench CSV (--svg), and the\n"
                 "memory per connection of each model at its largest C (--memory-svg).\n\n"
              << options;
    return std::nullopt;
  }
  if (result.csv_file.empty()) throw usage_error("no --csv file given");
  if (result.svg_file.empty() && result.memory_svg_file.empty())
    throw usage_error("no --svg or --memory-svg file given");
  return result;
}

std::vector<std::string> split(const std::string& line)
{
  std::vector<std::string> fields;
  std::stringstream in(line);
  std::string field;
  while (std::getline(in, field, ',')) fields.push_back(field);
  if (!line.empty() && line.back() == ',') fields.emplace_back();
  return fields;
}

struct point {
  double clients;
  double e;
  std::string delay;
};

struct series {
  std::string model;
  std::vector<point> points;
};

// The race rows of the CSV, one series per model in the order the models first appear.
std::vector<series> read_series(const std::string& path)
{
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot read: " + poetry::system_reason(errno));
  std::string line;
  if (!std::getline(in, line)) throw std::runtime_error(path + ": empty");
  std::map<std::string, std::size_t> column;
  auto header = split(line);
  for (std::size_t i = 0; i < header.size(); ++i) column[header[i]] = i;
  for (const char* name : {"section", "model", "clients", "delay_s", "e"})
    if (!column.count(name)) throw std::runtime_error(path + ": no column '" + std::string(name) + "'");
  std::vector<series> result;
  while (std::getline(in, line)) {
    auto fields = split(line);
    if (fields.size() < header.size() || fields[column["section"]] != "race" || fields[column["e"]].empty()) continue;
    const std::string& model = fields[column["model"]];
    auto it = std::find_if(result.begin(), result.end(), [&](const series& s) { return s.model == model; });
    if (it == result.end()) it = result.insert(result.end(), series{model, {}});
    it->points.push_back(
      {std::stod(fields[column["clients"]]), std::stod(fields[column["e"]]), fields[column["delay_s"]]});
  }
  for (auto& s : result)
    std::sort(s.points.begin(), s.points.end(), [](const point& a, const point& b) { return a.clients < b.clients; });
  return result;
}

// Memory per connection of one model, at its largest C.
struct memory_bar {
  std::string model;
  double clients = 0;
  double process_bytes = 0;  // (peak RSS at C - peak RSS at 1) / C
  double kernel_bytes = -1;  // sockstat's TCP buffer pages over C; -1 when not measured
};

// The race rows with a peak RSS: per model, the largest C and the one-client run at its delay.
std::vector<memory_bar> read_memory(const std::string& path)
{
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot read: " + poetry::system_reason(errno));
  std::string line;
  if (!std::getline(in, line)) throw std::runtime_error(path + ": empty");
  std::map<std::string, std::size_t> column;
  auto header = split(line);
  for (std::size_t i = 0; i < header.size(); ++i) column[header[i]] = i;
  for (const char* name : {"section", "model", "clients", "delay_s", "peak_rss_kib"})
    if (!column.count(name)) throw std::runtime_error(path + ": no column '" + std::string(name) + "'");
  struct row {
    double clients, rss_kib, tcp_pages;
    std::string delay;
  };
  std::vector<std::pair<std::string, row>> rows;
  while (std::getline(in, line)) {
    auto fields = split(line);
    if (fields.size() < header.size() || fields[column["section"]] != "race" || fields[column["peak_rss_kib"]].empty())
      continue;
    double pages = -1;
    if (column.count("tcp_mem_pages_peak") && !fields[column["tcp_mem_pages_peak"]].empty())
      pages = std::stod(fields[column["tcp_mem_pages_peak"]]);
    rows.push_back({fields[column["model"]],
                    {std::stod(fields[column["clients"]]), std::stod(fields[column["peak_rss_kib"]]), pages,
                     fields[column["delay_s"]]}});
  }
  std::vector<memory_bar> result;
  for (const auto& entry : rows) {
    const std::string& model = entry.first;
    const row& r = entry.second;
    auto it = std::find_if(result.begin(), result.end(), [&](const memory_bar& b) { return b.model == model; });
    if (it == result.end()) it = result.insert(result.end(), memory_bar{model});
    if (r.clients <= it->clients || r.clients < 100) continue;  // a few clients: noise, not a cost
    auto one = std::find_if(rows.begin(), rows.end(), [&](const auto& o) {
      return o.first == model && o.second.clients == 1 && o.second.delay == r.delay;
    });
    if (one == rows.end()) continue;
    it->clients = r.clients;
    it->process_bytes = std::max(0.0, (r.rss_kib - one->second.rss_kib) * 1024 / r.clients);
    it->kernel_bytes = r.tcp_pages < 0 ? -1 : r.tcp_pages * 4096 / r.clients;
  }
  std::erase_if(result, [](const memory_bar& b) { return b.clients == 0; });
  return result;
}

// The course's colours, one per model; any other model gets grey.
std::string colour(const std::string& model)
{
  static const std::map<std::string, std::string> colours = {
    {"blocking", "#d62728"},       {"threaded", "#ff7f0e"},      {"select", "#2ca02c"},
    {"asio_callbacks", "#1f77b4"}, {"asio_protocol", "#9467bd"},
  };
  auto it = colours.find(model);
  return it == colours.end() ? "#7f7f7f" : it->second;
}

std::string number(double value)
{
  std::ostringstream out;
  out << value;
  return out.str();
}

std::string count_label(double c)
{
  std::string digits = number(c), result;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) result += ',';
    result += digits[i];
  }
  return result;
}

// A point's mark: each model its own shape, so points on top of each other stay apart.
void marker(std::ostream& out, const std::string& model, double x, double y, const std::string& fill,
            const std::string& title = "")
{
  static const std::map<std::string, std::string> shapes = {
    {"threaded", "m-4,-4 h8 v8 h-8 z"},
    {"select", "m0,-5.5 l5.5,5.5 l-5.5,5.5 l-5.5,-5.5 z"},
    {"asio_callbacks", "m0,-5.5 l5,9 h-10 z"},
    {"asio_protocol", "m0,5.5 l5,-9 h-10 z"},
  };
  std::string c = colour(model), end = title.empty() ? "/>" : "><title>" + title + "</title>";
  auto it = shapes.find(model);
  if (it == shapes.end()) out << "<circle cx=\"" << x << "\" cy=\"" << y << "\" r=\"4\"";
  else out << "<path d=\"M" << x << ',' << y << ' ' << it->second << "\"";
  out << " stroke=\"" << c << "\" stroke-width=\"2\" fill=\"" << (fill.empty() ? c : fill) << "\"" << end;
  if (!title.empty()) out << (it == shapes.end() ? "</circle>" : "</path>");
  out << "\n";
}

// One panel of the plot: a frame, its grid, and every series drawn through the panel's scales.
struct panel {
  double left, top, width, height;
  double max_c;          // x: log10 C from 1 to max_c
  double y_low, y_high;  // y: the range shown
  bool log_y;
  std::string clip_id;

  double x(double c) const { return left + width * std::log10(c) / std::ceil(std::log10(max_c)); }
  double y(double e) const
  {
    double lo = log_y ? std::log10(y_low) : y_low, hi = log_y ? std::log10(y_high) : y_high;
    double v = log_y ? std::log10(e) : e;
    return top + height * (hi - v) / (hi - lo);
  }
};

void draw_panel(std::ostream& out, const panel& p, const std::vector<series>& all, const std::string& base_delay,
                const std::string& heading, const std::string& y_label)
{
  out << "<clipPath id=\"" << p.clip_id << "\"><rect x=\"" << p.left - 6 << "\" y=\"" << p.top - 6 << "\" width=\""
      << p.width + 12 << "\" height=\"" << p.height + 12 << "\"/></clipPath>\n"
      << "<text x=\"" << p.left << "\" y=\"" << p.top - 12 << "\" font-weight=\"bold\">" << heading << "</text>\n";
  // The grid: a line per decade of C, and E at a few readable values (none crowding another).
  for (int d = 0; d <= std::ceil(std::log10(p.max_c)); ++d) {
    double c = std::pow(10.0, d);
    out << "<line x1=\"" << p.x(c) << "\" y1=\"" << p.top << "\" x2=\"" << p.x(c) << "\" y2=\"" << p.top + p.height
        << "\" stroke=\"#ddd\"/>\n"
        << "<text x=\"" << p.x(c) << "\" y=\"" << p.top + p.height + 16 << "\" text-anchor=\"middle\">"
        << count_label(c) << "</text>\n";
  }
  std::vector<double> labelled;  // the most telling values first
  for (double e : {1.0, 10.0, 100.0, 1000.0, 10000.0, 2.0, 5.0, 20.0, 50.0, 1.5, 3.0, 1.2, 1.1, 0.9, 1.3, 0.8, 0.5}) {
    bool crowded = std::any_of(labelled.begin(), labelled.end(), [&](double y) { return std::abs(p.y(e) - y) < 14; });
    if (e < p.y_low || e > p.y_high || crowded) continue;
    labelled.push_back(p.y(e));
    out << "<line x1=\"" << p.left << "\" y1=\"" << p.y(e) << "\" x2=\"" << p.left + p.width << "\" y2=\"" << p.y(e)
        << "\" stroke=\"#ddd\"/>\n"
        << "<text x=\"" << p.left - 6 << "\" y=\"" << p.y(e) + 4 << "\" text-anchor=\"end\">" << number(e)
        << "</text>\n";
  }
  out << "<text transform=\"translate(" << p.left - 42 << "," << p.top + p.height / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << y_label << "</text>\n";

  // The two ideals: E = 1 (every client at once) and E = C (one client after another).
  out << "<g clip-path=\"url(#" << p.clip_id << ")\">\n"
      << "<line x1=\"" << p.x(1) << "\" y1=\"" << p.y(1) << "\" x2=\"" << p.x(p.max_c) << "\" y2=\"" << p.y(1)
      << "\" stroke=\"#555\" stroke-dasharray=\"6 4\"/>\n";
  double diagonal_end = std::min(p.max_c, p.y_high);
  out << "<line x1=\"" << p.x(1) << "\" y1=\"" << p.y(1) << "\" x2=\"" << p.x(diagonal_end) << "\" y2=\""
      << p.y(diagonal_end) << "\" stroke=\"#555\" stroke-dasharray=\"2 4\"/>\n";

  // One line per model; a point measured at another delay than the rest is drawn hollow.
  for (const auto& s : all) {
    std::string c = colour(s.model);
    out << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"2\" points=\"";
    for (const auto& pt : s.points) out << p.x(pt.clients) << ',' << p.y(pt.e) << ' ';
    out << "\"/>\n";
    for (const auto& pt : s.points)
      marker(out, s.model, p.x(pt.clients), p.y(pt.e), pt.delay != base_delay ? "white" : "",
             s.model + ": E(" + count_label(pt.clients) + ") = " + number(pt.e) + " at --delay " + pt.delay);
  }
  out << "</g>\n";
}

// Two panels: every model on log scales (blocking's E = C is a diagonal), then the concurrent
// models close up, where the differences of a few percent are.
void write_svg(const plot_options& options, const std::vector<series>& all)
{
  const double width = 760, height = 760, left = 80, right = 200;
  double max_c = 10, min_e = 0.9, max_e = 2, zoom_max = 1.3;
  std::string base_delay, other_delay;
  for (const auto& s : all)
    for (const auto& p : s.points) {
      if (base_delay.empty()) base_delay = p.delay;
      if (p.delay != base_delay) other_delay = p.delay;
      max_c = std::max(max_c, p.clients);
      min_e = std::min(min_e, p.e * 0.95);
      max_e = std::max(max_e, p.e * 1.15);
      if (s.model != "blocking") zoom_max = std::max(zoom_max, std::ceil(p.e * 10 + 0.5) / 10);
    }
  zoom_max = std::min(zoom_max, 2.0);
  panel overview{left, 80, width - left - right, 300, max_c, min_e, max_e, true, "overview"};
  panel zoom{left, 460, width - left - right, 240, max_c, std::min(0.9, min_e), zoom_max, false, "zoom"};

  std::ofstream out(options.svg_file);
  if (!out) throw std::runtime_error(options.svg_file + ": cannot write: " + poetry::system_reason(errno));
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << ' ' << height << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << left << "\" y=\"30\" font-size=\"16\">" << options.title << "</text>\n";
  draw_panel(out, overview, all, base_delay, "Every model (both axes log scale)", "E(C) = T(C) / T(1)");
  draw_panel(out, zoom, all, base_delay, "Close up on E near 1 (linear scale)", "E(C) = T(C) / T(1)");
  out << "<text x=\"" << left + (width - left - right) / 2 << "\" y=\"" << height - 20
      << "\" text-anchor=\"middle\">C, clients at once (log scale)</text>\n";

  // The legend, right of the plots.
  double lx = width - right + 20, ly = 90;
  for (const auto& s : all) {
    out << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 24 << "\" y2=\"" << ly << "\" stroke=\""
        << colour(s.model) << "\" stroke-width=\"2\"/>\n"
        << "<text x=\"" << lx + 30 << "\" y=\"" << ly + 4 << "\">" << s.model << "</text>\n";
    marker(out, s.model, lx + 12, ly, "");
    ly += 20;
  }
  ly += 10;
  out << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 24 << "\" y2=\"" << ly
      << "\" stroke=\"#555\" stroke-dasharray=\"6 4\"/>\n"
      << "<text x=\"" << lx + 30 << "\" y=\"" << ly + 4 << "\">E = 1, all at once</text>\n";
  ly += 20;
  out << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 24 << "\" y2=\"" << ly
      << "\" stroke=\"#555\" stroke-dasharray=\"2 4\"/>\n"
      << "<text x=\"" << lx + 30 << "\" y=\"" << ly + 4 << "\">E = C, one by one</text>\n";
  ly += 26;
  out << "<circle cx=\"" << lx + 4 << "\" cy=\"" << ly - 4 << "\" r=\"4\" fill=\"#555\"/>"
      << "<text x=\"" << lx + 14 << "\" y=\"" << ly << "\">--delay " << base_delay << "</text>\n";
  if (!other_delay.empty())
    out << "<circle cx=\"" << lx + 4 << "\" cy=\"" << ly + 16 << "\" r=\"4\" stroke=\"#555\" stroke-width=\"2\" "
        << "fill=\"white\"/><text x=\"" << lx + 14 << "\" y=\"" << ly + 20 << "\">--delay " << other_delay
        << "</text>\n";
  out << "</svg>\n";
  if (!out.flush()) throw std::runtime_error(options.svg_file + ": cannot write: " + poetry::system_reason(errno));
}

// Horizontal bars, two per model: the process's bytes per connection, and the kernel's.
void write_memory_svg(const std::string& file, const std::vector<memory_bar>& bars)
{
  const double width = 760, left = 150, right = 170, top = 70, group = 50;
  const double height = top + group * static_cast<double>(bars.size()) + 70;
  double most = 1;
  for (const auto& b : bars) most = std::max({most, b.process_bytes, b.kernel_bytes});
  double scale = (width - left - right) / most;
  std::ofstream out(file);
  if (!out) throw std::runtime_error(file + ": cannot write: " + poetry::system_reason(errno));
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << ' ' << height << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << left
      << "\" y=\"30\" font-size=\"16\">Memory per connection, at each model's largest C</text>\n"
      << "<text x=\"" << left << "\" y=\"50\">(peak RSS at C - peak RSS at 1) / C, and the kernel's TCP buffer pages "
      << "(sockstat) / C</text>\n";
  double y = top;
  for (const auto& b : bars) {
    std::string c = colour(b.model);
    out << "<text x=\"" << left - 8 << "\" y=\"" << y + 16 << "\" text-anchor=\"end\">" << b.model << "</text>\n"
        << "<text x=\"" << left - 8 << "\" y=\"" << y + 30
        << "\" text-anchor=\"end\" fill=\"#555\">C = " << count_label(b.clients) << "</text>\n"
        << "<rect x=\"" << left << "\" y=\"" << y + 4 << "\" width=\"" << std::max(1.0, b.process_bytes * scale)
        << "\" height=\"16\" fill=\"" << c << "\"><title>" << b.model << ": "
        << count_label(std::round(b.process_bytes)) << " bytes per connection in the process</title></rect>\n"
        << "<text x=\"" << left + b.process_bytes * scale + 6 << "\" y=\"" << y + 16 << "\">"
        << count_label(std::round(b.process_bytes)) << " B in the process</text>\n";
    if (b.kernel_bytes >= 0)
      out << "<rect x=\"" << left << "\" y=\"" << y + 22 << "\" width=\"" << std::max(1.0, b.kernel_bytes * scale)
          << "\" height=\"10\" fill=\"#999\"/>\n"
          << "<text x=\"" << left + b.kernel_bytes * scale + 6 << "\" y=\"" << y + 31 << "\" fill=\"#555\">"
          << count_label(std::round(b.kernel_bytes)) << " B of TCP buffers in the kernel</text>\n";
    y += group;
  }
  out << "<line x1=\"" << left << "\" y1=\"" << top << "\" x2=\"" << left << "\" y2=\"" << y << "\" stroke=\"#555\"/>\n"
      << "<text x=\"" << left << "\" y=\"" << y + 30 << "\" fill=\"#555\">Thread stacks, coroutine frames, handlers "
      << "and buffers count in the process; the kernel's socket</text>\n"
      << "<text x=\"" << left << "\" y=\"" << y + 46 << "\" fill=\"#555\">structures (slab) are not in sockstat's "
      << "pages: see docs/07-scale.md.</text>\n"
      << "</svg>\n";
  if (!out.flush()) throw std::runtime_error(file + ": cannot write: " + poetry::system_reason(errno));
}

}  // namespace

int main(int argc, char* argv[])
{
  return poetry::run_main(argv[0], [&] {
    auto options = parse_options(argc, argv);
    if (!options) return 0;
    if (!options->svg_file.empty()) {
      auto all = read_series(options->csv_file);
      if (all.empty()) throw std::runtime_error(options->csv_file + ": no race rows to plot");
      write_svg(*options, all);
    }
    if (!options->memory_svg_file.empty()) {
      auto bars = read_memory(options->csv_file);
      if (bars.empty()) throw std::runtime_error(options->csv_file + ": no race rows with memory to plot");
      write_memory_svg(options->memory_svg_file, bars);
    }
    return 0;
  });
}
