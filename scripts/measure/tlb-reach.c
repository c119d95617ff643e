/*
 * tlb-reach: reads a valgrind lackey trace (--tool=lackey --trace-mem=yes)
 * on stdin and prints, as JSON, how many distinct 4 KiB pages a program
 * touches in windows of W instructions, for several W: the pages a TLB
 * flushed at the start of such a window has to walk for again.
 *
 * Records: "I  addr,size" (an instruction fetch), " L addr,size" (load),
 * " S addr,size" (store), " M addr,size" (modify); other lines are skipped.
 * Windows are consecutive and disjoint, counted in I records; a page is
 * counted once per window, split into code (I) and data (L/S/M) pages
 * (a page both fetched and accessed counts in both and once in `pages`).
 *
 * Build: cc -O2 -o tlb-reach tlb-reach.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NW 7
static const uint64_t WIN[NW] = { 3000, 10000, 30000, 100000, 300000, 1000000, 3000000 };
#define HBITS 22
#define HSIZE (1u << HBITS)

struct table { uint64_t *key; uint32_t *stamp; uint8_t *kind; };
struct acc { uint64_t windows, pages, code, data; uint64_t hist[64]; };

static struct table tab[NW];
static struct acc acc[NW];
static uint64_t cur_pages[NW], cur_code[NW], cur_data[NW];
static uint32_t window_id[NW];

static void close_window(int w) {
  acc[w].windows++;
  acc[w].pages += cur_pages[w];
  acc[w].code += cur_code[w];
  acc[w].data += cur_data[w];
  uint64_t b = 0, v = cur_pages[w];
  while (v > 1 && b < 63) { v >>= 1; b++; }
  acc[w].hist[b]++;
  cur_pages[w] = cur_code[w] = cur_data[w] = 0;
  window_id[w]++;
}

static void touch(int w, uint64_t page, int code) {
  struct table *t = &tab[w];
  uint32_t h = (uint32_t)((page * 0x9E3779B97F4A7C15ull) >> (64 - HBITS));
  for (;;) {
    if (t->stamp[h] == 0 || t->key[h] == page) break;
    h = (h + 1) & (HSIZE - 1);
  }
  uint8_t bit = code ? 1 : 2;
  if (t->stamp[h] != window_id[w] + 1 || t->key[h] != page) {
    if (t->stamp[h] == 0) t->key[h] = page;
    t->stamp[h] = window_id[w] + 1;
    t->kind[h] = bit;
    cur_pages[w]++;
    if (code) cur_code[w]++; else cur_data[w]++;
  } else if (!(t->kind[h] & bit)) {
    t->kind[h] |= bit;
    if (code) cur_code[w]++; else cur_data[w]++;
  }
}

int main(void) {
  for (int w = 0; w < NW; w++) {
    tab[w].key = calloc(HSIZE, 8); tab[w].stamp = calloc(HSIZE, 4); tab[w].kind = calloc(HSIZE, 1);
    if (!tab[w].key || !tab[w].stamp || !tab[w].kind) { fprintf(stderr, "tlb-reach: out of memory\n"); return 1; }
  }
  static char line[256];
  uint64_t instr = 0, data = 0, in_window[NW] = {0};
  while (fgets(line, sizeof line, stdin)) {
    int code;
    char *p = line;
    if (p[0] == 'I' && p[1] == ' ') { code = 1; p += 2; }
    else if (p[0] == ' ' && (p[1] == 'L' || p[1] == 'S' || p[1] == 'M') && p[2] == ' ') { code = 0; p += 3; }
    else continue;
    while (*p == ' ') p++;
    uint64_t addr = strtoull(p, NULL, 16);
    uint64_t page = addr >> 12;
    if (code) instr++; else data++;
    for (int w = 0; w < NW; w++) {
      /* Windows only end across a fixed count of table slots: a fresh table per ~4 M pages. */
      touch(w, page, code);
      if (code && ++in_window[w] == WIN[w]) {
        close_window(w);
        in_window[w] = 0;
        if ((window_id[w] & 0x3ff) == 0) { memset(tab[w].stamp, 0, HSIZE * 4); }
      }
    }
  }
  printf("{\n  \"instructions\": %llu,\n  \"dataAccesses\": %llu,\n  \"windows\": [\n", (unsigned long long)instr, (unsigned long long)data);
  for (int w = 0; w < NW; w++) {
    struct acc *a = &acc[w];
    double n = a->windows ? (double)a->windows : 1;
    printf("    { \"instructions\": %llu, \"count\": %llu, \"pages\": %.1f, \"codePages\": %.1f, \"dataPages\": %.1f }%s\n",
      (unsigned long long)WIN[w], (unsigned long long)a->windows, a->pages / n, a->code / n, a->data / n, w + 1 < NW ? "," : "");
  }
  printf("  ]\n}\n");
  return 0;
}
