import { run } from '@bufbuild/cel';
import type { z } from 'zod';

/**
 * A cross-field rule, written once in CEL. The CRD generator emits it as an `x-kubernetes-validations` entry,
 * so the API server refuses the resource at `kubectl apply`; the zod schema evaluates the same expression
 * (with @bufbuild/cel), so dev mode and the admission webhook refuse it with the same message.
 */
export interface Rule {
  /** CEL over `self`, the value of the node the rule is attached to. */
  rule: string;
  /** What to fix, in words a user acts on. */
  message: string;
  /** JSONPath of the offending field relative to the node, e.g. `.target.timeout`. */
  fieldPath?: string;
}

const rulesKey = 'x-kubernetes-validations';

export function withRules<T extends z.ZodType>(schema: T, ...rules: Rule[]): T {
  const existing = (schema.meta()?.[rulesKey] as Rule[] | undefined) ?? [];
  const checked = schema.superRefine((value, ctx) => {
    for (const r of rules) {
      if (run(r.rule, { self: value as never }) !== true) {
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
