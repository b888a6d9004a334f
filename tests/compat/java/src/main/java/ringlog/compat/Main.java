package ringlog.compat;

import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Runs compatibility scenarios against one broker and reports one JSON line per scenario on
 * stdout: {"scenario": name, "ok": bool, "seconds": s, "result": {...} | "error": "..."}.
 *
 * <p>Usage: {@code java -cp ... ringlog.compat.Main BOOTSTRAP SCENARIO...}. A JVM takes seconds
 * to start and warm up, so one run does every scenario; each has its own topics and groups and
 * a time limit, and a failing one does not stop the others. The Python tests assert on the
 * reported results (and on what the broker stored).
 */
public final class Main {
    private static final long SCENARIO_TIMEOUT_S = Long.getLong("ringlog.scenario.timeout.s", 120);

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: Main BOOTSTRAP SCENARIO...; scenarios: " + Scenarios.ALL.keySet());
            System.exit(2);
        }
        // stdout carries only the report lines; the clients log to stderr (slf4j-simple)
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);
        String bootstrap = args[0];
        for (int i = 1; i < args.length; i++) {
            out.println(Json.write(run(bootstrap, args[i])));
        }
        // client threads (e.g. a Streams instance that failed to close) must not keep the JVM up
        System.exit(0);
    }

    private static Map<String, Object> run(String bootstrap, String name) {
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("scenario", name);
        Scenario scenario = Scenarios.ALL.get(name);
        long start = System.nanoTime();
        if (scenario == null) {
            line.put("ok", false);
            line.put("error", "unknown scenario " + name);
            return line;
        }
        ExecutorService executor = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "scenario-" + name);
            t.setDaemon(true);
            return t;
        });
        Future<Map<String, Object>> future = executor.submit(() -> scenario.run(new Ctx(bootstrap, name)));
        try {
            line.put("result", future.get(SCENARIO_TIMEOUT_S, TimeUnit.SECONDS));
            line.put("ok", true);
        } catch (ExecutionException e) {
            line.put("ok", false);
            line.put("error", stackTrace(e.getCause()));
        } catch (TimeoutException e) {
            future.cancel(true);
            line.put("ok", false);
            line.put("error", "timed out after " + SCENARIO_TIMEOUT_S + " s");
        } catch (InterruptedException e) {
            line.put("ok", false);
            line.put("error", "interrupted");
        } finally {
            executor.shutdownNow();
        }
        line.put("seconds", (System.nanoTime() - start) / 1e9);
        return line;
    }

    static String stackTrace(Throwable t) {
        StringWriter sw = new StringWriter();
        t.printStackTrace(new PrintWriter(sw));
        return sw.toString();
    }

    @FunctionalInterface
    interface Scenario {
        Map<String, Object> run(Ctx ctx) throws Exception;
    }
}
