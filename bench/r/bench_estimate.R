# R survey side of bench/bench_estimate.py (called by it; not meant to be run by hand).
# Usage: Rscript bench/r/bench_estimate.R DATA_DIR TASK OUT_PREFIX REPEAT SLOW_S EPSILON
# Reads the raw little-endian binary columns written by bench_estimate.py (base readBin: R has
# no Parquet reader here), declares the design, times TASK and writes OUT_PREFIX.txt (and, for
# rake, the raked weights as float64 to OUT_PREFIX.bin).
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]
task <- args[2]
out <- args[3]
reps <- as.integer(args[4])
slow <- as.numeric(args[5])
eps <- as.numeric(args[6])
suppressMessages(library(survey))

n <- as.integer(readLines(file.path(dir, "n.txt")))
path <- function(name) file.path(dir, paste0(name, ".bin"))
rd <- function(name) readBin(path(name), "double", n)
ri <- function(name) readBin(path(name), "integer", n, size = 4)
levs <- function(name) readLines(file.path(dir, paste0("levels_", name, ".txt")))
fa <- function(name) structure(ri(name), levels = levs(name), class = "factor")

df <- data.frame(
  stratum = ri("stratum"), psu = ri("psu"), w = rd("w"),
  y1 = rd("y1"), y2 = rd("y2"), y3 = rd("y3"), y4 = rd("y4"), y5 = rd("y5"),
  prov = fa("prov"), gender = fa("gender"), age = fa("age"), cat5 = fa("cat5")
)
status <- function(key) {
  s <- readLines("/proc/self/status")
  line <- s[startsWith(s, paste0(key, ":"))]
  as.numeric(gsub("[^0-9]", "", line)) * 1024
}
invisible(gc())
rss_loaded <- status("VmRSS")

elapsed <- function() proc.time()[["elapsed"]]
t0 <- elapsed()
des <- svydesign(ids = ~psu, strata = ~stratum, weights = ~w, data = df)
t_design <- elapsed() - t0

run <- function(f) {
  times <- c()
  for (i in seq_len(reps)) {
    invisible(gc())
    t0 <- elapsed()
    res <- f()
    times <- c(times, elapsed() - t0)
    if (times[length(times)] > slow) break
  }
  list(res = res, times = times)
}

pop <- function(name) {
  t <- read.csv(file.path(dir, paste0("targets_", name, ".csv")), stringsAsFactors = FALSE)
  p <- data.frame(factor(t$level, levels = levs(name)), t$count)
  names(p) <- c(name, "Freq")
  p
}

labels <- NULL
est <- NULL
se <- NULL
if (task == "means") {
  r <- run(function() svymean(~ y1 + y2 + y3 + y4 + y5, des))
  labels <- names(coef(r$res)); est <- coef(r$res); se <- SE(r$res)
} else if (task == "domain") {
  r <- run(function() svyby(~y1, ~prov, des, svymean))
  labels <- as.character(r$res$prov); est <- coef(r$res); se <- SE(r$res)
} else if (task == "props") {
  r <- run(function() svymean(~cat5, des))
  labels <- sub("^cat5", "", names(coef(r$res))); est <- coef(r$res); se <- SE(r$res)
} else if (task == "rake") {
  margins <- list(pop("prov"), pop("gender"), pop("age"))
  r <- run(function() rake(des, list(~prov, ~gender, ~age), margins,
                           control = list(maxit = 100, epsilon = eps)))
  writeBin(as.numeric(weights(r$res)), paste0(out, ".bin"))
} else {
  stop("unknown task ", task)
}

f <- function(x) paste(sprintf("%.17g", x), collapse = " ")
lines <- c(
  paste("times", f(r$times)),
  paste("design", f(t_design)),
  paste("rss_loaded", f(rss_loaded)),
  paste("hwm", f(status("VmHWM"))),
  paste("version", as.character(packageVersion("survey")))
)
if (!is.null(labels)) {
  lines <- c(lines, paste("labels", paste(labels, collapse = " ")), paste("est", f(est)),
             paste("se", f(se)))
}
writeLines(lines, paste0(out, ".txt"))
