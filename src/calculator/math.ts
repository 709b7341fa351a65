import { ToolInputError } from '../errors.js'

/** A calculation that has no finite answer; becomes a tool result with isError. */
export class CalculationError extends ToolInputError {
  override name = 'CalculationError'
}

export const BINARY_OPERATIONS = ['add', 'subtract', 'multiply', 'divide', 'power', 'modulo'] as const
export const ADVANCED_OPERATIONS = ['factorial', 'sqrt', 'log', 'ln', 'sin', 'cos', 'tan', 'abs'] as const

export type BinaryOperation = typeof BINARY_OPERATIONS[number]
export type AdvancedOperation = typeof ADVANCED_OPERATIONS[number]

const SYMBOLS: Record<BinaryOperation, string> = {
  add: '+', subtract: '-', multiply: '×', divide: '÷', power: '^', modulo: 'mod'
}

/** Largest n whose factorial is finite in IEEE-754 doubles. */
export const MAX_FACTORIAL = 170

function finite (value: number, what: string): number {
  if (!Number.isFinite(value)) throw new CalculationError(`The result of ${what} is too large to represent (it overflows to infinity)`)
  return Object.is(value, -0) ? 0 : value
}

/**
 * Applies a binary operation.
 * @throws {CalculationError} on division or modulo by zero, or a result that is not finite.
 */
export function calculate (a: number, b: number, op: BinaryOperation): number {
  const what = describeBinary(a, b, op)
  switch (op) {
    case 'add': return finite(a + b, what)
    case 'subtract': return finite(a - b, what)
    case 'multiply': return finite(a * b, what)
    case 'divide':
      if (b === 0) throw new CalculationError('Division by zero is undefined: b must not be 0')
      return finite(a / b, what)
    case 'modulo':
      if (b === 0) throw new CalculationError('Modulo by zero is undefined: b must not be 0')
      return finite(a % b, what)
    case 'power': {
      const result = a ** b
      if (Number.isNaN(result)) throw new CalculationError(`${what} has no real result (a negative base with a fractional exponent)`)
      return finite(result, what)
    }
  }
}

/**
 * Applies a one-argument operation; `base` applies to `log` only (default 10).
 * @throws {CalculationError} for a value outside the operation's domain or a result that is not finite.
 */
export function calculateAdvanced (operation: AdvancedOperation, value: number, base = 10): number {
  const what = describeAdvanced(operation, value, base)
  switch (operation) {
    case 'factorial': {
      if (!Number.isInteger(value) || value < 0) throw new CalculationError('Factorial is defined for non-negative integers only')
      if (value > MAX_FACTORIAL) throw new CalculationError(`Factorial above ${MAX_FACTORIAL} overflows; value must be at most ${MAX_FACTORIAL}`)
      let result = 1
      for (let i = 2; i <= value; i++) result *= i
      return result
    }
    case 'sqrt':
      if (value < 0) throw new CalculationError('The square root of a negative number is not a real number')
      return finite(Math.sqrt(value), what)
    case 'log':
      if (value <= 0) throw new CalculationError('The logarithm is defined for positive values only')
      if (base <= 0 || base === 1) throw new CalculationError('The logarithm base must be positive and not 1')
      // log10 and log2 are exact on powers of their base, where the quotient of logarithms is not.
      if (base === 10) return finite(Math.log10(value), what)
      if (base === 2) return finite(Math.log2(value), what)
      return finite(Math.log(value) / Math.log(base), what)
    case 'ln':
      if (value <= 0) throw new CalculationError('The natural logarithm is defined for positive values only')
      return finite(Math.log(value), what)
    case 'sin': return finite(Math.sin(value), what)
    case 'cos': return finite(Math.cos(value), what)
    case 'tan': return finite(Math.tan(value), what)
    case 'abs': return finite(Math.abs(value), what)
  }
}

export function describeBinary (a: number, b: number, op: BinaryOperation): string {
  return `${a} ${SYMBOLS[op]} ${b}`
}

export function describeAdvanced (operation: AdvancedOperation, value: number, base = 10): string {
  if (operation === 'factorial') return `${value}!`
  if (operation === 'log') return `log${base === 10 ? '' : `_${base}`}(${value})`
  return `${operation}(${value})`
}

/** Mathematical constants served by `calculator://constants`. */
export const CONSTANTS = {
  pi: { value: Math.PI, description: 'Ratio of a circle\'s circumference to its diameter' },
  e: { value: Math.E, description: 'Base of the natural logarithm' },
  phi: { value: (1 + Math.sqrt(5)) / 2, description: 'The golden ratio' },
  sqrt2: { value: Math.SQRT2, description: 'Square root of 2' },
  ln2: { value: Math.LN2, description: 'Natural logarithm of 2' },
  ln10: { value: Math.LN10, description: 'Natural logarithm of 10' }
} as const

/** Formulas served by `formulas://library` and offered by the `explain_formula` prompt. */
export const FORMULAS = {
  'quadratic-formula': { formula: 'x = (-b ± √(b² - 4ac)) / 2a', description: 'Roots of ax² + bx + c = 0' },
  pythagorean: { formula: 'a² + b² = c²', description: 'Sides of a right triangle' },
  'circle-area': { formula: 'A = πr²', description: 'Area of a circle of radius r' },
  'compound-interest': { formula: 'A = P(1 + r/n)^(nt)', description: 'Value of principal P after t years at rate r compounded n times a year' },
  'distance-formula': { formula: 'd = √((x₂ - x₁)² + (y₂ - y₁)²)', description: 'Distance between two points in a plane' },
  slope: { formula: 'm = (y₂ - y₁) / (x₂ - x₁)', description: 'Slope of the line through two points' }
} as const
