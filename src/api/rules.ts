import type { z } from 'zod';

/**
 * A cross-field rule, written once in CEL. The CRD generator emits it as an `x-kubernetes-validations` entry,
 * so the API server refuses the resource at `kubectl apply`; the zod schema evaluates the same expression
 * (with @bufbuild/cel, see rules-cel.ts), so dev mode and the admission webhook refuse it with the same message.
 */
export interface Rule {
  /** CEL over `self`, the value of the node the rule is attached to. */
  rule: string;
  /** What to fix, in words a user acts on. */
  message: string;
  /** JSONPath of the offending field relative to the node, e.g. `.target.timeout`. */
  fieldPath?: string;
  /**
   * A transition rule: it compares `self` with `oldSelf`, the value before an update. Only the API server
   * evaluates it (on updates); a schema check of one manifest has no old value to compare with.
   */
  transition?: true;
}

const rulesKey = 'x-kubernetes-validations';

/**
 * Meta key of a required field whose absence the CRD reports with a CEL rule of the parent, in these words, instead
 * of the API server's bare "Required value": that error would also hide every rule of the object (such as the one
 * that explains where an inline secret goes). The zod schema says the same words itself.
 */
export const requiredByRule = 'x-hookyard-required-message';

/** Evaluates a rule over `self`: true when it holds. */
export type RuleEvaluator = (rule: string, self: unknown) => boolean;

// The evaluator is installed by rules-cel.ts (imported by validate.ts), so that the schemas can be loaded
// without CEL: see withoutRules.
let evaluate: RuleEvaluator | undefined;
let skipping = false;

export function setRuleEvaluator(evaluator: RuleEvaluator): void {
  evaluate = evaluator;
}

/**
 * Runs `parse` without evaluating the rules: for a resource the API server has already checked with these same
 * rules, such as the ProviderEndpoint the operator hands a receiver. Its shape and defaults are still checked.
 */
export function withoutRules<T>(parse: () => T): T {
  skipping = true;
  try {
    return parse();
  } finally {
    skipping = false;
  }
}

export function withRules<T extends z.ZodType>(schema: T, ...rules: Rule[]): T {
  const existing = (schema.meta()?.[rulesKey] as Rule[] | undefined) ?? [];
  const checked = schema.superRefine((value, ctx) => {
    if (skipping) return;
    if (!evaluate) throw new Error('CEL rules cannot be evaluated: import src/api/validate.ts, or parse withoutRules');
    for (const r of rules) {
      if (r.transition) continue;
      if (!evaluate(r.rule, value)) {
        ctx.addIssue({ code: 'custom', message: r.message, path: pathOf(r.fieldPath) });
      }
    }
  }) as unknown as T;
  return checked.meta({ ...schema.meta(), [rulesKey]: [...existing, ...rules] }) as T;
}

function pathOf(fieldPath: string | undefined): (string | number)[] {
  if (!fieldPath) return [];
  return fieldPath
    .split(/[.[\]]/)
    .filter((part) => part !== '')
    .map((part) => (/^\d+$/.test(part) ? Number(part) : part.replace(/^'|'$/g, '')));
}
