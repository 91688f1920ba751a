/*
 * replay_main.c - the fuzz targets without libFuzzer: a main() that feeds every file of the
 * given directories (or the files themselves) to LLVMFuzzerTestOneInput once, after
 * LLVMFuzzerInitialize when the target has one. The normal and the ASan builds link each
 * fuzz_*.c with it and ctest replays fuzz/corpus/<target>/ through it (fuzz.replay.*), so an
 * input that once crashed a target fails CI when the bug comes back, on any compiler.
 *
 *   fuzz_NAME_replay PATH...
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

#define REPLAY_MAX_INPUT (1024 * 1024)

/* Run one file; -1 when it cannot be read. */
static int
replay_file(const char *path)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *data = NULL;
	size_t len = 0;
	int rc = -1;

	if (fp == NULL)
		goto out;
	data = malloc(REPLAY_MAX_INPUT);
	if (data == NULL)
		goto out;
	len = fread(data, 1, REPLAY_MAX_INPUT, fp);
	if (ferror(fp))
		goto out;
	LLVMFuzzerTestOneInput(data, len);
	rc = 0;
out:
	if (fp != NULL)
		fclose(fp);
	free(data);
	if (rc != 0)
		fprintf(stderr, "replay: cannot read %s\n", path);
	return rc;
}

/* Run path (a file, or each regular file of a directory, in name order); the count run. */
static int
replay_path(const char *path, int *failed)
{
	struct dirent **names = NULL;
	struct stat st;
	char full[4096];
	int n, count = 0;

	if (stat(path, &st) != 0) {
		fprintf(stderr, "replay: no such file or directory: %s\n", path);
		*failed = 1;
		return 0;
	}
	if (!S_ISDIR(st.st_mode)) {
		*failed |= replay_file(path) != 0;
		return 1;
	}
	n = scandir(path, &names, NULL, alphasort);
	for (int i = 0; i < n; i++) {
		snprintf(full, sizeof(full), "%s/%s", path, names[i]->d_name);
		if (names[i]->d_name[0] != '.' && stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
			*failed |= replay_file(full) != 0;
			count++;
		}
		free(names[i]);
	}
	free(names);
	return count;
}

int
main(int argc, char **argv)
{
	int failed = 0, count = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE-OR-DIRECTORY...\n", argv[0]);
		return 2;
	}
	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++)
		count += replay_path(argv[i], &failed);
	printf("replayed %d inputs\n", count);
	/* An empty corpus proves nothing: a target without seeds is a failure. */
	return failed || count == 0 ? 1 : 0;
}
