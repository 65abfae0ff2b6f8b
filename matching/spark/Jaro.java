// DuckDB's jaro_similarity / jaro_winkler_similarity for Spark, as a Java UDF (matching/spark/jaro_udf.py).
// DuckDB embeds RapidFuzz's algorithm; this is the same algorithm over code points with the same arithmetic
// in the same order, so a threshold such as `>= 0.8` falls on the same side (Splink's jar computes
// commons-text's Jaro-Winkler, which differs). Compiled when a session starts by Janino, the Java compiler
// Spark itself ships and uses for code generation, into a jar that goes to the executors with Splink's.
// Janino ignores generics, hence raw UDF2. `fused`: the Winkler boost as one fused multiply-add, where this
// machine's DuckDB computes it so (matching.duckdb_backend.duckdb_fuses_winkler).
package briefing.udf;

public class Jaro implements org.apache.spark.sql.api.java.UDF2 {
    private final boolean winkler;
    private final boolean fused;

    public Jaro(boolean winkler, boolean fused) {
        this.winkler = winkler;
        this.fused = fused;
    }

    public Object call(Object a, Object b) throws Exception {
        if (a == null || b == null) return null;
        int[] p = ((String) a).codePoints().toArray();
        int[] t = ((String) b).codePoints().toArray();
        return Double.valueOf(winkler ? jaroWinkler(p, t, fused) : jaro(p, t));
    }

    public static double jaro(int[] p, int[] t) {
        int pl = p.length, tl = t.length;
        if (pl == 0 || tl == 0) return 0.0;
        if (pl == 1 && tl == 1) return p[0] == t[0] ? 1.0 : 0.0;
        int bound = Math.max(pl, tl) / 2 - 1;
        boolean[] pFlag = new boolean[pl];
        boolean[] tFlag = new boolean[tl];
        int common = 0;
        for (int i = 0; i < pl; i++) {
            int hi = Math.min(i + bound, tl - 1);
            for (int j = Math.max(0, i - bound); j <= hi; j++) {
                if (!tFlag[j] && t[j] == p[i]) {
                    pFlag[i] = true;
                    tFlag[j] = true;
                    common++;
                    break;
                }
            }
        }
        if (common == 0) return 0.0;
        int k = 0, transpositions = 0;
        for (int i = 0; i < pl; i++) {
            if (pFlag[i]) {
                int j = k;
                while (!tFlag[j]) j++;
                k = j + 1;
                if (p[i] != t[j]) transpositions++;
            }
        }
        transpositions /= 2;
        double sim = 0.0;
        sim += (double) common / (double) pl;
        sim += (double) common / (double) tl;
        sim += (double) (common - transpositions) / (double) common;
        return sim / 3.0;
    }

    public static double jaroWinkler(int[] p, int[] t, boolean fused) {
        int prefix = 0;
        int maxPrefix = Math.min(4, Math.min(p.length, t.length));
        while (prefix < maxPrefix && p[prefix] == t[prefix]) prefix++;
        double sim = jaro(p, t);
        if (sim > 0.7) {
            double w = (double) prefix * 0.1;
            sim = fused ? Math.fma(w, 1.0 - sim, sim) : sim + w * (1.0 - sim);
            sim = Math.min(sim, 1.0);
        }
        return sim;
    }
}
