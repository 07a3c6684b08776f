// Figures through gnuplot: a data file and a script per figure, rendered to PNG (pngcairo) and SVG. No LibTorch.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

#include <fmt/core.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cerebra/exp/experiments.h"

namespace fs = std::filesystem;

namespace cerebra::exp {

namespace {

std::string quote(const std::string& s) {  // gnuplot single-quoted string
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string num(double v) { return std::isfinite(v) ? fmt::format("{:.10g}", v) : std::string("0"); }

bool has_errors(const Series& s) {
  for (double e : s.x_err)
    if (std::isfinite(e) && e > 0) return true;
  for (double e : s.y_err)
    if (std::isfinite(e) && e > 0) return true;
  return false;
}

double at(const std::vector<double>& v, size_t i) {
  return i < v.size() ? v[i] : std::numeric_limits<double>::quiet_NaN();
}

void write_block(std::ostream& out, const Series& s) {
  out << "# " << s.title << "\n# x y x_std y_std\n";
  for (size_t i = 0; i < s.x.size(); ++i)
    out << num(s.x[i]) << ' ' << num(at(s.y, i)) << ' ' << num(at(s.x_err, i)) << ' ' << num(at(s.y_err, i)) << '\n';
}

}  // namespace

std::string gnuplot_binary() {
  auto executable = [](const fs::path& p) { return fs::is_regular_file(p) && ::access(p.c_str(), X_OK) == 0; };
  if (const char* env = std::getenv("CEREBRA_GNUPLOT")) return executable(env) ? std::string(env) : std::string();
  const char* path = std::getenv("PATH");
  std::stringstream ss(path ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string d; std::getline(ss, d, ':');)
    if (!d.empty() && executable(fs::path(d) / "gnuplot")) return (fs::path(d) / "gnuplot").string();
  return "";
}

void run_gnuplot(const std::string& dir, const std::string& script_name) {
  const std::string bin = gnuplot_binary();
  if (bin.empty())
    throw std::runtime_error(
        "gnuplot not found (looked in $CEREBRA_GNUPLOT, else PATH): install it with `apt-get install gnuplot-nox` "
        "(scripts/setup.sh) to draw the plots; the tables and the gnuplot scripts (" +
        (fs::path(dir) / script_name).string() + ") were written and can be rendered later");
  const std::string err = script_name + ".log";
  const std::string cmd = "cd " + shell_quote(dir) + " && " + shell_quote(bin) + " " + shell_quote(script_name) +
                          " > " + shell_quote(err) + " 2>&1";
  const int rc = std::system(cmd.c_str());
  if (rc != 0 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
    std::ifstream f(fs::path(dir) / err);
    std::stringstream text;
    text << f.rdbuf();
    throw std::runtime_error("gnuplot failed on " + (fs::path(dir) / script_name).string() + ": " + text.str());
  }
}

std::vector<std::string> draw_figure(const std::string& dir, const Figure& fig) {
  fs::create_directories(dir);
  const fs::path d(dir);
  const std::string dat = fig.stem + ".dat", front = fig.stem + "_frontier.dat", gp = fig.stem + ".gp";
  std::vector<const Series*> drawn;
  {
    std::ofstream out(d / dat);
    if (!out) throw std::runtime_error("cannot write " + (d / dat).string());
    for (const auto& s : fig.series) {
      if (s.x.empty()) continue;
      if (!drawn.empty()) out << "\n\n";
      write_block(out, s);
      drawn.push_back(&s);
    }
  }
  if (drawn.empty()) throw std::runtime_error("figure " + fig.stem + ": no points to plot");
  if (!fig.frontier.x.empty()) {
    std::ofstream out(d / front);
    write_block(out, fig.frontier);
  }

  std::ostringstream g;
  g << "# " << fig.title << " (rendered by gnuplot: gnuplot " << gp << ")\n";
  g << "set terminal pngcairo size 1000,620 noenhanced font 'sans,10'\n";
  g << "set output " << quote(fig.stem + ".png") << "\n";
  g << "set title " << quote(fig.title) << "\n";
  g << "set xlabel " << quote(fig.xlabel) << "\nset ylabel " << quote(fig.ylabel) << "\n";
  g << "set grid\nset key outside right top box\nset bars small\n";
  if (fig.logx) g << "set logscale x\nset format x '%.3g'\n";
  if (!fig.xformat.empty()) g << "set format x " << quote(fig.xformat) << "\nset xtics rotate by -30\n";
  if (fig.logy) g << "set logscale y\n";
  g << "plot ";
  for (size_t i = 0; i < drawn.size(); ++i) {
    const Series& s = *drawn[i];
    const int lc = static_cast<int>(i % 8) + 1;
    if (i) g << ", \\\n     ";
    const std::string src = quote(dat) + " index " + std::to_string(i);
    if (has_errors(s)) {
      g << src << " using 1:2:3:4 with xyerrorbars lc " << lc << " pt 7 ps 0.9 title " << quote(s.title);
      if (fig.lines) g << ", \\\n     " << src << " using 1:2 with lines lc " << lc << " notitle";
    } else {
      g << src << " using 1:2 with " << (fig.lines ? "linespoints" : "points") << " lc " << lc
        << " pt 7 ps 0.9 title " << quote(s.title);
    }
  }
  if (!fig.frontier.x.empty()) {
    g << ", \\\n     " << quote(front) << " using 1:2 with steps lw 2 dt 2 lc rgb 'black' title "
      << quote(fig.frontier.title.empty() ? "Pareto frontier" : fig.frontier.title);
    g << ", \\\n     " << quote(front) << " using 1:2 with points pt 6 ps 1.8 lc rgb 'black' notitle";
  }
  g << "\nset terminal svg size 1000,620 noenhanced font 'sans,10' background rgb 'white'\n";
  g << "set output " << quote(fig.stem + ".svg") << "\nreplot\nunset output\n";
  {
    std::ofstream out(d / gp);
    out << g.str();
  }
  run_gnuplot(dir, gp);
  return {(d / (fig.stem + ".png")).string(), (d / (fig.stem + ".svg")).string()};
}

}  // namespace cerebra::exp
