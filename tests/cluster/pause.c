/* The pod sandbox process: holds the Pod's namespaces until stopped. */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>

static void stop(int sig) { (void)sig; exit(0); }
/* PID 1 of the sandbox: reap orphans so none stay zombies. */
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
